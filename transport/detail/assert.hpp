// MWS_ASSERT for programmer errors inside transport/ (STYLE.md): stays on in every build type.
// The foundation has no shared assert header yet; this one steps aside if one is included first.
#pragma once

#include <cstdio>
#include <cstdlib>

#ifndef MWS_ASSERT
#define MWS_ASSERT(condition)                                                                 \
  do {                                                                                        \
    if (!(condition)) {                                                                       \
      std::fprintf(stderr, "%s:%d: MWS_ASSERT(%s) failed\n", __FILE__, __LINE__, #condition); \
      std::abort();                                                                           \
    }                                                                                         \
  } while (false)
#endif
