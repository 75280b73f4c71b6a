package io.mixtune.trainer.cli;

import java.io.PrintStream;
import java.util.List;
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

    /** Names of the positional arguments the command takes, in order ("NAME", "DEST"); most take none. */
    default List<String> arguments() {
        return List.of();
    }

    /** How many of {@link #arguments()}, from the first, must be given; the rest are optional. */
    default int requiredArguments() {
        return arguments().size();
    }

    /**
     * Runs the command; stdout is for results, anything else goes to stderr. Returns the exit code. The positional
     * arguments are in {@code line.getArgList()}: at most as many as {@link #arguments()} names, at least
     * {@link #requiredArguments()}.
     */
    int run(CommandLine line, PrintStream out) throws Exception;
}
