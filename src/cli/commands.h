// cli: the `drover` command. Each subcommand parses its flags, calls one function of a
// part (api::Server, client::Client, runner::RunAgent) and prints the answer.
#pragma once

namespace drover::cli {

// Runs the command line; returns the process exit code.
int Main(int argc, char** argv);

}  // namespace drover::cli
