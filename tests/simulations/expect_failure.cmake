# Runs CMD (a ;-list) and passes only when it exits non-zero and its output matches EXPECT, and
# it did not crash (a signal shows up as a non-numeric result).
execute_process(COMMAND ${CMD} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err
                TIMEOUT 60)
if(NOT rc MATCHES "^[0-9]+$")
  message(FATAL_ERROR "crashed or timed out (${rc}): ${out}${err}")
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "exited 0 but should have failed: ${out}${err}")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "output does not match '${EXPECT}': ${out}${err}")
endif()
