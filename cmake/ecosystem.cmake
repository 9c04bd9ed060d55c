# Installing and packaging herd beyond the binaries and libherd (those are
# installed where they are built, in CMakeLists.txt):
#   - a CMake package config: find_package(herd) gives herd::herd (libherd.so)
#     and herd::herd_static (libherd.a);
#   - man pages herd(1), herdctl(1), herdd(8);
#   - systemd: herdd.service (Type=notify) with herd.socket (socket activation),
#     the herd user and group (sysusers.d), /run/herd and /var/lib/herd
#     (tmpfiles.d), /etc/herd/herd.json (etc/herd under other prefixes);
#   - the Python client (python/herd) into lib/python3/dist-packages;
#   - `cpack -G DEB`: the herd .deb (maintainer scripts in packaging/debian).
include(CMakePackageConfigHelpers)
set(HERD_PKG_DIR ${CMAKE_SOURCE_DIR}/packaging)

# ---- find_package(herd) ------------------------------------------------------
if(TARGET herd_shared)
  set_target_properties(herd_shared PROPERTIES EXPORT_NAME herd)
  set_target_properties(herd_archive PROPERTIES EXPORT_NAME herd_static)
  install(EXPORT herdTargets NAMESPACE herd:: DESTINATION lib/cmake/herd)
  configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/herdConfig.cmake.in
    ${CMAKE_BINARY_DIR}/herdConfig.cmake INSTALL_DESTINATION lib/cmake/herd)
  write_basic_package_version_file(${CMAKE_BINARY_DIR}/herdConfigVersion.cmake
    VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
  install(FILES ${CMAKE_BINARY_DIR}/herdConfig.cmake ${CMAKE_BINARY_DIR}/herdConfigVersion.cmake
          DESTINATION lib/cmake/herd)
endif()

# ---- man pages -----------------------------------------------------------------
set(HERD_VERSION ${PROJECT_VERSION})
foreach(page herd.1 herdctl.1 herdd.8)
  string(REGEX REPLACE ".*\\." "" section ${page})
  configure_file(${CMAKE_SOURCE_DIR}/man/${page} ${CMAKE_BINARY_DIR}/man/${page} @ONLY)
  install(FILES ${CMAKE_BINARY_DIR}/man/${page} DESTINATION share/man/man${section})
endforeach()

# ---- systemd, sysusers, tmpfiles, the service's configuration --------------------
# The unit names the installed herdd and the configuration directory, both
# known only at install time (cpack installs with prefix /usr, whose
# configuration lives in /etc; any other prefix keeps it under PREFIX/etc).
install(FILES ${HERD_PKG_DIR}/systemd/herd.socket DESTINATION lib/systemd/system)
install(FILES ${HERD_PKG_DIR}/sysusers.d-herd.conf DESTINATION lib/sysusers.d RENAME herd.conf)
install(FILES ${HERD_PKG_DIR}/tmpfiles.d-herd.conf DESTINATION lib/tmpfiles.d RENAME herd.conf)
install(CODE "
  set(HERD_BINDIR \"\${CMAKE_INSTALL_PREFIX}/bin\")
  set(HERD_SYSCONFDIR \"\${CMAKE_INSTALL_PREFIX}/etc\")
  if(CMAKE_INSTALL_PREFIX STREQUAL \"/usr\")
    set(HERD_SYSCONFDIR /etc)
  endif()
  # straight to the destination: concurrent installs (the tests) do not race
  set(unit \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/lib/systemd/system/herdd.service\")
  message(STATUS \"Installing: \${unit}\")
  configure_file(\"${HERD_PKG_DIR}/systemd/herdd.service.in\" \"\${unit}\" @ONLY)
  list(APPEND CMAKE_INSTALL_MANIFEST_FILES \"\${CMAKE_INSTALL_PREFIX}/lib/systemd/system/herdd.service\")
  file(INSTALL \"${HERD_PKG_DIR}/herd.json\" DESTINATION \"\${HERD_SYSCONFDIR}/herd\")
")

# ---- the Python client -------------------------------------------------------------
install(DIRECTORY ${CMAKE_SOURCE_DIR}/python/herd DESTINATION lib/python3/dist-packages
        FILES_MATCHING PATTERN "*.py")

# ---- cpack -G DEB ------------------------------------------------------------------
set(CPACK_PACKAGE_NAME herd)
set(CPACK_PACKAGE_VENDOR "herd")
set(CPACK_PACKAGE_CONTACT "herd maintainers <herd@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "CPU LLaMA broker: one model in shared memory for many local agents")
set(CPACK_PACKAGE_DESCRIPTION "herdd serves a quantized LLaMA-architecture model (GGUF) to many local
agent processes: one copy of the weights in shared memory, a batching
scheduler, socket activation under systemd. With libherd and its headers,
pkg-config and CMake files, herd and herdctl, and the Python client.")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
# What the binaries link (ldd on herdd, herd, herdctl, libherd.so), libsystemd0
# for socket activation, libmicrohttpd12 for the HTTP server.
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libc6 (>= 2.34), liblmdb0, liburing2, libbpf1, libsystemd0, libmicrohttpd12, libmsgpackc2, libjson-c5")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "python3, python3-msgpack")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "libmsgpack-dev, gnuplot-nox")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${HERD_PKG_DIR}/debian/postinst;${HERD_PKG_DIR}/debian/prerm;${HERD_PKG_DIR}/debian/postrm;${HERD_PKG_DIR}/debian/conffiles")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)

# ---- tests -------------------------------------------------------------------------
# systemd-analyze verify on the installed units; socket activation with a
# descriptor passed by systemd-socket-activate (77 without those tools).
add_test(NAME systemd_units COMMAND sh ${CMAKE_SOURCE_DIR}/tests/check_systemd.sh ${CMAKE_BINARY_DIR})
set_tests_properties(systemd_units PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
# The .deb: cpack, dpkg -i, the installed herdd serves, purge (77 unless
# root with dpkg). It installs into /usr: alone, and not for a sanitizer
# build (whose binaries need the sanitizer runtimes the package does not name).
if(NOT HERD_SANITIZE)
  add_test(NAME deb_package COMMAND sh ${CMAKE_SOURCE_DIR}/tests/check_deb.sh ${CMAKE_BINARY_DIR})
  set_tests_properties(deb_package PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600 RUN_SERIAL TRUE)
endif()
