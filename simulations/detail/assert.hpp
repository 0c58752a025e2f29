// Programmer-error checks of the simulator. They stay on in every build type: a simulation that
// breaks an invariant must stop at once, with the place, rather than produce a plausible number.
#pragma once

#include <cstdio>
#include <cstdlib>

#define MWS_SIM_ASSERT(cond)                                                            \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::fprintf(stderr, "%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                     \
    }                                                                                   \
  } while (false)
