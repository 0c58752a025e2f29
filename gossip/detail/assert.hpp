// MWS_ASSERT: programmer errors (broken preconditions, impossible states). Stays on in every
// build type, tests and simulation included; prints where and aborts.
#pragma once

#ifndef MWS_ASSERT
#include <cstdio>
#include <cstdlib>

#define MWS_ASSERT(cond)                                                                 \
  do {                                                                                   \
    if (!(cond)) {                                                                       \
      std::fprintf(stderr, "%s:%d: MWS_ASSERT(%s) failed\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                      \
    }                                                                                    \
  } while (false)
#endif
