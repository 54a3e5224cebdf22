// Typed errors: every failure names what failed and where, so a user's mistake
// becomes a message that tells them what to do, never a crash.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dsv4 {

class Error : public std::runtime_error {
 public:
  Error(std::string where, const std::string& what)
      : std::runtime_error("[" + where + "] " + what), where_(std::move(where)) {}
  const std::string& where() const { return where_; }

 private:
  std::string where_;
};

// Builds a message from streamable parts: str("offset ", 10, " > ", 8).
template <typename... Args>
std::string str(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

}  // namespace dsv4

// DSV4_CHECK(cond, "where", parts...): throw dsv4::Error when cond is false.
#define DSV4_CHECK(cond, where, ...)                        \
  do {                                                      \
    if (!(cond)) throw ::dsv4::Error((where), ::dsv4::str(__VA_ARGS__)); \
  } while (0)
