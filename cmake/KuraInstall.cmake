# What `cmake --install` puts where, and the package files that let other
# projects use the installed kura (find_package and pkg-config).
#
#   <prefix>/include/kura/<component>/*.hpp   public headers (never *_internal.hpp)
#   <prefix>/include/kura/version.hpp         generated from cmake/version.hpp.in
#   <prefix>/lib/libkura_<component>.a        static, position-independent
#   <prefix>/lib/libkura_<component>.so.*     shared, SONAME libkura_<component>.so.<KURA_SOVERSION>
#   <prefix>/lib/cmake/kura/                  kuraConfig.cmake: kura::<component> (shared)
#                                             and kura::<component>_static
#   <prefix>/lib/pkgconfig/kura.pc            every component, for pkg-config
#   <prefix>/bin/kura                         the command-line tool
#
# ("lib" is CMAKE_INSTALL_LIBDIR.) Each library's CMakeLists.txt calls
# kura_install_component() right after defining its target; the top
# CMakeLists.txt calls kura_install_package() once, after every library.
#
# Adding a component (ipc): give kura_ipc's include directory as
# $<BUILD_INTERFACE:...> and $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>,
# and end ipc/CMakeLists.txt with `kura_install_component(ipc)`. Nothing else
# changes: kura::ipc, kura::ipc_static, their dependencies (libuv through
# pkg-config) and -lkura_ipc in kura.pc follow from the target.

include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# Until 1.0 a minor release may break the ABI (semantic versioning, major
# version 0), so the SONAME carries major.minor; from 1.0 on, the major alone.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(KURA_SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
  set(KURA_VERSION_COMPATIBILITY SameMinorVersion)
else()
  set(KURA_SOVERSION ${PROJECT_VERSION_MAJOR})
  set(KURA_VERSION_COMPATIBILITY SameMajorVersion)
endif()

# kura_install_component(<name>)
#
# Installs the component <name>: the static library target kura_<name>
# (defined in <name>/CMakeLists.txt, with its public headers under
# <name>/include/kura/<name>/ and its include directories given as
# $<BUILD_INTERFACE:...> and $<INSTALL_INTERFACE:...>), a shared library made
# from the same objects, and the headers. Call it after the target's
# target_link_libraries(): the shared library links what the static one
# links, with kura_<other> replaced by the shared kura_<other>_shared, and
# the package files learn from the same list what users of the static
# library need:
#   kura_<other>        nothing more (installed by its own call)
#   PkgConfig::<P>      found again by kuraConfig.cmake with pkg-config, and
#                       in kura.pc's Requires.private (<P>_MODULE_NAME)
#   Threads::Threads    find_dependency(Threads); -pthread in Libs.private
#   a plain name (dl)   -l<name> in Libs.private
# Anything else (another target of this project, a generator expression, an
# imported target not listed here) stops the configuration: say here how
# users find it.
function(kura_install_component name)
  set(static kura_${name})
  set(shared kura_${name}_shared)

  # The objects of the static library are compiled with -fPIC
  # (CMAKE_POSITION_INDEPENDENT_CODE), so the shared library reuses them
  # instead of compiling every source twice.
  add_library(${shared} SHARED $<TARGET_OBJECTS:${static}>)
  set_target_properties(${shared} PROPERTIES
    OUTPUT_NAME kura_${name}
    VERSION ${PROJECT_VERSION}
    SOVERSION ${KURA_SOVERSION}
    EXPORT_NAME ${name})
  set_target_properties(${static} PROPERTIES EXPORT_NAME ${name}_static)
  get_target_property(includes ${static} INTERFACE_INCLUDE_DIRECTORIES)
  set_target_properties(${shared} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${includes}")
  # The headers are C++20: users of either library compile as C++20 at least.
  target_compile_features(${static} PUBLIC cxx_std_20)
  target_compile_features(${shared} PUBLIC cxx_std_20)

  # A static library keeps its PRIVATE dependencies in its interface as
  # $<LINK_ONLY:...>, its PUBLIC ones as they are.
  get_target_property(links ${static} LINK_LIBRARIES)
  get_target_property(public ${static} INTERFACE_LINK_LIBRARIES)
  if(NOT links)
    set(links "")
  endif()
  set(find_deps "")
  set(pc_modules "")
  set(pc_libs "")
  foreach(link IN LISTS links)
    set(scope PRIVATE)
    if(link IN_LIST public)
      set(scope PUBLIC)
    endif()
    if(link MATCHES "^kura_(.+)$" AND TARGET ${link}_shared)
      target_link_libraries(${shared} ${scope} ${link}_shared)
      continue()
    endif()
    target_link_libraries(${shared} ${scope} ${link})
    if(link MATCHES "^PkgConfig::(.+)$")
      set(module ${${CMAKE_MATCH_1}_MODULE_NAME})
      if(NOT module)
        message(FATAL_ERROR "kura_install_component(${name}): ${link} is not from pkg_check_modules() of one module")
      endif()
      string(APPEND find_deps "_kura_find_pkg(${CMAKE_MATCH_1} ${module})\n")
      list(APPEND pc_modules ${module})
    elseif(link STREQUAL "Threads::Threads")
      string(APPEND find_deps "find_dependency(Threads)\n")
      list(APPEND pc_libs -pthread)
    elseif(link STREQUAL "OpenSSL::Crypto")
      string(APPEND find_deps "find_dependency(OpenSSL)\n")
      list(APPEND pc_modules libcrypto)
    elseif(link STREQUAL "OpenSSL::SSL")
      string(APPEND find_deps "find_dependency(OpenSSL)\n")
      list(APPEND pc_modules libssl)
    elseif(NOT TARGET ${link} AND link MATCHES "^[A-Za-z0-9_+.-]+$")
      list(APPEND pc_libs -l${link})
    else()
      message(FATAL_ERROR "kura_install_component(${name}): users of the installed kura_${name} would need "
        "${link}; teach cmake/KuraInstall.cmake how they find it")
    endif()
  endforeach()

  install(TARGETS ${static} ${shared} EXPORT kuraTargets
    ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
    LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
  get_target_property(source_dir ${static} SOURCE_DIR)
  install(DIRECTORY ${source_dir}/include/kura/${name}
    DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kura
    FILES_MATCHING PATTERN "*.hpp"
    PATTERN "*_internal.hpp" EXCLUDE)

  set_property(GLOBAL APPEND PROPERTY KURA_COMPONENTS ${name})
  set_property(GLOBAL APPEND_STRING PROPERTY KURA_CONFIG_FIND_DEPS "${find_deps}")
  set_property(GLOBAL APPEND PROPERTY KURA_PC_MODULES ${pc_modules})
  set_property(GLOBAL APPEND PROPERTY KURA_PC_LIBS_PRIVATE ${pc_libs})
endfunction()

# kura_install_package(VERSION_HEADER <file>)
#
# Installs the generated version header, the `kura` tool when it is built,
# and the package files for every component installed so far: the CMake
# package (kuraConfig.cmake, kuraConfigVersion.cmake, kuraTargets.cmake) and
# kura.pc.
function(kura_install_package)
  cmake_parse_arguments(PARSE_ARGV 0 arg "" "VERSION_HEADER" "")
  install(FILES ${arg_VERSION_HEADER} DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/kura)
  if(TARGET kura)
    install(TARGETS kura RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()

  get_property(components GLOBAL PROPERTY KURA_COMPONENTS)
  get_property(KURA_CONFIG_FIND_DEPS GLOBAL PROPERTY KURA_CONFIG_FIND_DEPS)
  get_property(pc_modules GLOBAL PROPERTY KURA_PC_MODULES)
  get_property(pc_libs GLOBAL PROPERTY KURA_PC_LIBS_PRIVATE)
  set(KURA_CONFIG_COMPONENTS ${components})

  set(cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/kura)
  install(EXPORT kuraTargets NAMESPACE kura:: DESTINATION ${cmake_dir})
  configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/kuraConfig.cmake.in
    ${PROJECT_BINARY_DIR}/package/kuraConfig.cmake
    INSTALL_DESTINATION ${cmake_dir})
  write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/kuraConfigVersion.cmake
    COMPATIBILITY ${KURA_VERSION_COMPATIBILITY})
  install(FILES
    ${PROJECT_BINARY_DIR}/package/kuraConfig.cmake
    ${PROJECT_BINARY_DIR}/package/kuraConfigVersion.cmake
    DESTINATION ${cmake_dir})

  # kura.pc finds the prefix from where it lies (${pcfiledir}), so it stays
  # right for whatever `cmake --install --prefix` is given.
  set(pc_dir ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
  if(IS_ABSOLUTE ${CMAKE_INSTALL_LIBDIR} OR IS_ABSOLUTE ${CMAKE_INSTALL_INCLUDEDIR})
    message(FATAL_ERROR "kura.pc needs CMAKE_INSTALL_LIBDIR and CMAKE_INSTALL_INCLUDEDIR relative to the prefix")
  endif()
  file(RELATIVE_PATH up /${pc_dir} /)
  string(REGEX REPLACE "/$" "" up "${up}")
  set(KURA_PC_PREFIX "\${pcfiledir}/${up}")
  # A library comes before those it uses on a link line.
  set(KURA_PC_LIBS "")
  list(REVERSE components)
  foreach(c IN LISTS components)
    string(APPEND KURA_PC_LIBS " -lkura_${c}")
  endforeach()
  list(REMOVE_DUPLICATES pc_modules)
  list(JOIN pc_modules ", " KURA_PC_REQUIRES_PRIVATE)
  list(REMOVE_DUPLICATES pc_libs)
  list(JOIN pc_libs " " KURA_PC_LIBS_PRIVATE)
  configure_file(${PROJECT_SOURCE_DIR}/cmake/kura.pc.in ${PROJECT_BINARY_DIR}/package/kura.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/package/kura.pc DESTINATION ${pc_dir})
endfunction()
