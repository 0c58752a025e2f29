# Compiler settings shared by every mws target.

set(MWS_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast
                 -Wcast-align -Wconversion -Wsign-conversion
                 -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough)
# GCC 12 at -O3 reports -Wrestrict on ordinary std::string concatenation (GCC bugs 105329,
# 105651): a false positive that would make Release builds fail under -Werror.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  list(APPEND MWS_WARNINGS -Wno-restrict)
endif()
if(MWS_WERROR)
  list(APPEND MWS_WARNINGS -Werror)
endif()

if(MWS_SANITIZE)
  add_compile_options(-fsanitize=${MWS_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=${MWS_SANITIZE})
endif()

# Applies the project's warnings and include root to a target of ours (not to third-party code).
function(mws_target_defaults target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${MWS_WARNINGS}>)
  target_include_directories(${target} PUBLIC $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}>)
endfunction()
