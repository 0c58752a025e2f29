// A fresh directory under /tmp, removed with everything in it when the object dies.
#pragma once

#include <stdlib.h>

#include <filesystem>

namespace mws::runtime::test {

struct temp_dir {
  std::filesystem::path path;
  temp_dir() {
    char tmpl[] = "/tmp/mws-runtime-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~temp_dir() { std::filesystem::remove_all(path); }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
};

}  // namespace mws::runtime::test
