# Project-wide helpers.
#
# cpserve_library(NAME SOURCES ... DEPS ...): a static library with the project's warnings.
# cpserve_test(NAME SOURCES ... DEPS ... LABELS unit|integration|e2e|gpu|slow [TIMEOUT s])
#   a GoogleTest executable registered with CTest under the given labels.
# cpserve_benchmark(NAME SOURCES ... DEPS ...): a Google Benchmark executable (not a test).

set(CPSERVE_WARNINGS -Wall -Wextra)
if(CPSERVE_WERROR)
  list(APPEND CPSERVE_WARNINGS -Werror)
endif()

function(cpserve_warnings target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${CPSERVE_WARNINGS}>)
endfunction()

function(cpserve_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PUBLIC_DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PUBLIC ${ARG_PUBLIC_DEPS} PRIVATE ${ARG_DEPS})
  cpserve_warnings(${name})
endfunction()

function(cpserve_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} GTest::gmock GTest::gtest_main)
  cpserve_warnings(${name})
  if(NOT ARG_LABELS)
    message(FATAL_ERROR "cpserve_test(${name}) needs LABELS")
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT}
                       ENVIRONMENT "CPSERVE_BIN_DIR=${CMAKE_BINARY_DIR}/bin;CPSERVE_SOURCE_DIR=${PROJECT_SOURCE_DIR}")
endfunction()

function(cpserve_benchmark name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} benchmark::benchmark)
  cpserve_warnings(${name})
endfunction()

# Adds every immediate subdirectory of the current source directory that has a
# CMakeLists.txt, so that components can be added without editing their parent.
macro(cpserve_add_subdirs)
  file(GLOB _cpserve_children LIST_DIRECTORIES true CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*)
  list(SORT _cpserve_children)
  foreach(_child ${_cpserve_children})
    if(IS_DIRECTORY ${_child} AND EXISTS ${_child}/CMakeLists.txt)
      add_subdirectory(${_child})
    endif()
  endforeach()
endmacro()
