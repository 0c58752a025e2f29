// Boost.JSON in header-only mode: its implementation is compiled in this one file.
#include <boost/json/src.hpp>
