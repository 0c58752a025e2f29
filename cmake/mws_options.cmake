# Compiler settings shared by every mws target.

set(MWS_WARNINGS -Wall -Wextra -Wpedantic -Wshadow -Wold-style-cast
                 -Wcast-align -Wconversion -Wsign-conversion
                 -Wdouble-promotion -Wformat=2 -Wimplicit-fallthrough)
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
