# CPSERVE_SANITIZE=address -> ASan + UBSan; CPSERVE_SANITIZE=thread -> TSan.
# See CMakePresets.json (presets "asan" and "tsan").
if(CPSERVE_SANITIZE STREQUAL "address")
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_link_options(-fsanitize=address,undefined)
elseif(CPSERVE_SANITIZE STREQUAL "thread")
  add_compile_options(-fsanitize=thread -fno-omit-frame-pointer)
  add_link_options(-fsanitize=thread)
elseif(NOT CPSERVE_SANITIZE STREQUAL "")
  message(FATAL_ERROR "CPSERVE_SANITIZE must be '', 'address' or 'thread', not '${CPSERVE_SANITIZE}'")
endif()
