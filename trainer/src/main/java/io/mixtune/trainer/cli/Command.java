package io.mixtune.trainer.cli;

import java.io.PrintStream;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** One `mixtune <name>` subcommand. */
interface Command {
    String name();

    /** One line for `mixtune --help`. */
    String summary();

    /** The usage line after `mixtune <name>`. */
    String usage();

    Options options();

    /** Runs the command; stdout is for results, anything else goes to stderr. Returns the exit code. */
    int run(CommandLine line, PrintStream out) throws Exception;
}
