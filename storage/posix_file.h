// POSIX file helpers shared by the export code: an owning file descriptor, synced writes, directory
// fsync, exclusive renames and hidden temporary directories committed by rename. Errors: Error(Io).
#pragma once
#include <filesystem>
#include <string>

namespace tandem {

std::string errno_text(int err);  // strerror(err)

// Owns a file descriptor (negative: none) and closes it on destruction.
class FileDescriptor {
 public:
  explicit FileDescriptor(int fd) : fd_(fd) {}
  FileDescriptor(const FileDescriptor&) = delete;
  FileDescriptor& operator=(const FileDescriptor&) = delete;
  ~FileDescriptor();
  int get() const { return fd_; }
  int release() {  // gives up ownership, e.g. to check ::close's result
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// 16 hex digits from the clock and std::random_device, for unique temporary names.
std::string random_hex();

// True if anything (even a dangling symlink) is at `p`.
bool path_exists(const std::filesystem::path& p);

// Writes a new file (it must not exist) in full and fsyncs it.
void write_new_file_synced(const std::filesystem::path& path, const std::string& bytes);

// Makes a directory's entries (a rename, a new file) durable. Tolerates file systems that cannot
// sync directories (EINVAL).
void fsync_directory(const std::filesystem::path& dir);

// Renames `from` to `to` unless `to` exists; false with errno = EEXIST if it does (other failures:
// false with errno set by rename).
bool rename_no_replace(const std::filesystem::path& from, const std::filesystem::path& to);

// Creates and returns a new directory `parent/<prefix>-<pid>-<random>`, retrying on a name clash.
std::filesystem::path make_temp_directory(const std::filesystem::path& parent, const std::string& prefix);

// Moves the finished directory `tmp` to `target` (both in `parent`). With `overwrite`, an existing
// target is renamed aside ("<aside_prefix>-old-<pid>-<random>"), `tmp` renamed in and the old one
// deleted (restored if the rename fails). Returns false, changing nothing, if `target` exists and
// !overwrite.
bool commit_directory(const std::filesystem::path& tmp, const std::filesystem::path& target,
                      const std::filesystem::path& parent, const std::string& aside_prefix, bool overwrite);

}  // namespace tandem
