// The dsv4 CLI: each subcommand lives in its own file under tools/ and registers
// itself here; main() dispatches on argv[1]. Subcommands only parse arguments and
// call the library.
#pragma once
#include <string>

namespace dsv4::cli {

// run(argc, argv) gets argv[0] = "dsv4 <name>" and the subcommand's own arguments.
using CommandFn = int (*)(int argc, char** argv);

struct CommandRegistrar {
  CommandRegistrar(const char* name, const char* summary, CommandFn fn);
};

}  // namespace dsv4::cli

#define DSV4_COMMAND(ident, name, summary, fn) \
  static ::dsv4::cli::CommandRegistrar dsv4_command_##ident(name, summary, fn)
