#include "storage/posix_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "engine/errors.h"

namespace tandem {

namespace fs = std::filesystem;

std::string errno_text(int err) { return std::strerror(err); }

FileDescriptor::~FileDescriptor() {
  if (fd_ >= 0) ::close(fd_);
}

std::string random_hex() {
  uint64_t r = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  try {
    std::random_device rd;
    r ^= (uint64_t{rd()} << 32) ^ rd();
  } catch (const std::exception&) {
    // No entropy source: the clock alone still makes a collision unlikely, and mkdir retries on one.
  }
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(r));
  return buf;
}

bool path_exists(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

void write_new_file_synced(const fs::path& path, const std::string& bytes) {
  FileDescriptor fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    const int err = errno;
    throw_io("cannot create '" + path.string() + "': " + errno_text(err), "check the output directory's permissions");
  }
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd.get(), p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      throw_io("cannot write '" + path.string() + "': " + errno_text(err), "check free disk space");
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd.get()) != 0 || ::close(fd.release()) != 0) {
    const int err = errno;
    throw_io("cannot flush '" + path.string() + "' to disk: " + errno_text(err),
             "check free disk space and the health of the file system");
  }
}

void fsync_directory(const fs::path& dir) {
  FileDescriptor fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    throw_io("cannot open directory '" + dir.string() + "': " + errno_text(err), "check its permissions");
  }
  if (::fsync(fd.get()) != 0 && errno != EINVAL) {  // EINVAL: the file system cannot sync directories
    const int err = errno;
    throw_io("cannot flush directory '" + dir.string() + "' to disk: " + errno_text(err),
             "check the health of the file system");
  }
}

bool rename_no_replace(const fs::path& from, const fs::path& to) {
#ifdef RENAME_NOREPLACE
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return true;
  if (errno != EINVAL && errno != ENOSYS) return false;  // else no exclusive rename here: check, then rename
#endif
  if (path_exists(to)) {
    errno = EEXIST;
    return false;
  }
  return ::rename(from.c_str(), to.c_str()) == 0;
}

fs::path make_temp_directory(const fs::path& parent, const std::string& prefix) {
  for (int attempt = 0;; ++attempt) {
    fs::path tmp = parent / (prefix + "-" + std::to_string(::getpid()) + "-" + random_hex());
    if (::mkdir(tmp.c_str(), 0755) == 0) return tmp;
    const int err = errno;
    if (err != EEXIST || attempt >= 8)
      throw_io("cannot create temporary directory '" + tmp.string() + "': " + errno_text(err),
               "check that you may write to " + parent.string());
  }
}

bool commit_directory(const fs::path& tmp, const fs::path& target, const fs::path& parent,
                      const std::string& aside_prefix, bool overwrite) {
  if (rename_no_replace(tmp, target)) return true;
  int err = errno;
  const bool exists = err == EEXIST || err == ENOTEMPTY;
  if (exists && !overwrite) return false;
  if (!exists)
    throw_io("cannot rename '" + tmp.string() + "' to '" + target.string() + "': " + errno_text(err),
             "check the permissions of " + parent.string());

  const fs::path old = parent / (aside_prefix + "-old-" + std::to_string(::getpid()) + "-" + random_hex());
  if (::rename(target.c_str(), old.c_str()) != 0) {
    err = errno;
    throw_io("cannot move the old model version '" + target.string() + "' aside: " + errno_text(err),
             "check the permissions of " + parent.string());
  }
  if (::rename(tmp.c_str(), target.c_str()) != 0) {
    err = errno;
    ::rename(old.c_str(), target.c_str());  // best effort: put the old version back
    throw_io("cannot rename '" + tmp.string() + "' to '" + target.string() + "': " + errno_text(err),
             "check the permissions of " + parent.string());
  }
  std::error_code ignored;  // committed; a leftover hidden .tmp- directory would be harmless
  fs::remove_all(old, ignored);
  return true;
}

}  // namespace tandem
