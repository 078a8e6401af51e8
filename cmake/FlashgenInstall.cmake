# Install rules and the CMake package (flashgenConfig.cmake, flashgen::flashgen).
#
# Two layouts, because the same targets serve a pip wheel and a C++ install prefix:
#   python  (default under scikit-build-core): everything inside the `flashgen` package, the
#           library next to _C (whose rpath is $ORIGIN), headers in flashgen/include and the
#           CMake package in flashgen/lib/cmake/flashgen, so a pip-installed package is also
#           a CMake prefix (flashgen.cmake_prefix_path()).
#   system  (default for a plain `cmake --install`): lib/, include/flashgen/, lib/cmake/flashgen,
#           the manifest in share/flashgen; the Python module is not installed.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

if(DEFINED SKBUILD)
  set(_flashgen_default_layout python)
else()
  set(_flashgen_default_layout system)
endif()
set(FLASHGEN_INSTALL_LAYOUT "${_flashgen_default_layout}" CACHE STRING "Install layout: python (wheel) or system")
set_property(CACHE FLASHGEN_INSTALL_LAYOUT PROPERTY STRINGS python system)

if(FLASHGEN_INSTALL_LAYOUT STREQUAL "python")
  set(FLASHGEN_INSTALL_LIBDIR flashgen)
  set(FLASHGEN_INSTALL_INCLUDEDIR flashgen/include)
  set(FLASHGEN_INSTALL_CMAKEDIR flashgen/lib/cmake/flashgen)
  set(FLASHGEN_INSTALL_DATADIR flashgen)
elseif(FLASHGEN_INSTALL_LAYOUT STREQUAL "system")
  set(FLASHGEN_INSTALL_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
  set(FLASHGEN_INSTALL_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
  set(FLASHGEN_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/flashgen")
  set(FLASHGEN_INSTALL_DATADIR "${CMAKE_INSTALL_DATADIR}/flashgen")
else()
  message(FATAL_ERROR "FLASHGEN_INSTALL_LAYOUT must be 'python' or 'system', got '${FLASHGEN_INSTALL_LAYOUT}'")
endif()

install(TARGETS flashgen EXPORT flashgenTargets
        LIBRARY DESTINATION "${FLASHGEN_INSTALL_LIBDIR}"
        INCLUDES DESTINATION "${FLASHGEN_INSTALL_INCLUDEDIR}")
install(DIRECTORY "${CMAKE_SOURCE_DIR}/include/flashgen" DESTINATION "${FLASHGEN_INSTALL_INCLUDEDIR}"
        FILES_MATCHING PATTERN "*.h")
install(FILES "${FLASHGEN_MANIFEST}" DESTINATION "${FLASHGEN_INSTALL_DATADIR}")

if(FLASHGEN_INSTALL_LAYOUT STREQUAL "python")
  # The runtime names kernels with the generator's own code (flashgen.codegen).
  install(DIRECTORY "${CMAKE_SOURCE_DIR}/codegen/" DESTINATION flashgen/codegen
          FILES_MATCHING PATTERN "*.py" PATTERN "__pycache__" EXCLUDE)
  if(TARGET _C)
    install(TARGETS _C LIBRARY DESTINATION flashgen)
  endif()
endif()

install(EXPORT flashgenTargets NAMESPACE flashgen:: DESTINATION "${FLASHGEN_INSTALL_CMAKEDIR}")
configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/flashgenConfig.cmake.in" "${CMAKE_BINARY_DIR}/flashgenConfig.cmake"
  INSTALL_DESTINATION "${FLASHGEN_INSTALL_CMAKEDIR}"
  PATH_VARS FLASHGEN_INSTALL_DATADIR)
# 0.x: a minor release may change the C ABI (flashgen_fwd_args_t's struct_size guards it too).
write_basic_package_version_file("${CMAKE_BINARY_DIR}/flashgenConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_BINARY_DIR}/flashgenConfig.cmake" "${CMAKE_BINARY_DIR}/flashgenConfigVersion.cmake"
        DESTINATION "${FLASHGEN_INSTALL_CMAKEDIR}")
