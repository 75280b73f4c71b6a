package io.mixtune.trainer.cli;

import ai.djl.Device;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.model.safetensors.CheckpointException;
import io.mixtune.trainer.InvalidOptionException;
import io.mixtune.trainer.Refusal;
import io.mixtune.trainer.device.ComputeDevice;
import io.mixtune.trainer.device.NoGpuException;
import io.mixtune.trainer.device.TorchSetup;
import io.mixtune.trainer.recipe.RecipeException;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.DefaultParser;
import org.apache.commons.cli.HelpFormatter;
import org.apache.commons.cli.Option;
import org.apache.commons.cli.Options;
import org.apache.commons.cli.ParseException;

/**
 * The `mixtune` command line. Exit codes: 0 success, 2 usage or input error (the command line, a recipe, a bad record
 * in a data file, a damaged checkpoint: something the user must fix), 1 failure. Errors are one line on stderr (a recipe's problems one line
 * each); the stack trace only with --verbose.
 */
public final class Mixtune {
    static final int OK = 0;
    static final int FAILURE = 1;
    static final int USAGE = 2;
    /** Lets DJL download a CUDA libtorch once (run time is offline otherwise); see TorchSetup. */
    static final String ALLOW_DOWNLOAD = "--allow-download";

    private final Map<String, Command> commands = new LinkedHashMap<>();

    Mixtune() {
        for (Command command : List.of(new TrainCommand(), new ValidateCommand(), new RecipesCommand.ListRecipes(),
                new RecipesCommand.Show(), new RecipesCommand.Copy(), new RecipesCommand.Import(), new EvalCommand(), new DataCommand.Prepare(),
                new DataCommand.Preview(), new GenerateCommand(), new ChatCommand(), new InitModelCommand(), new InitAdapterCommand(),
                new MergeAdapterCommand(), new MergeCommand(), new MergeMoeCommand(), new EnvCommand(),
                new RewardCommand(), new ExportGgufCommand(), new ExportLoraGgufCommand(), new ImatrixCommand())) {
            commands.put(command.name(), command);
        }
        Command plan = new PlanCommand();
        commands.put(plan.name(), plan);
    }

    public static void main(String[] args) {
        System.exit(new Mixtune().run(args, System.out, System.err));
    }

    int run(String[] args, PrintStream out, PrintStream err) {
        boolean verbose = Arrays.asList(args).contains("--verbose");
        boolean allowDownload = Arrays.asList(args).contains(ALLOW_DOWNLOAD) || TorchSetup.downloadAllowedByEnvironment();
        String[] rest = Arrays.stream(args).filter(a -> !a.equals("--verbose") && !a.equals(ALLOW_DOWNLOAD))
                .toArray(String[]::new);
        if (rest.length == 0 || rest[0].equals("--help") || rest[0].equals("-h") || rest[0].equals("help")) {
            printOverview(rest.length == 0 ? err : out);
            return rest.length == 0 ? USAGE : OK;
        }
        // A command with subcommands is registered once per subcommand, as "data prepare".
        int words = rest.length > 1 && commands.containsKey(rest[0] + " " + rest[1]) ? 2 : 1;
        Command command = commands.get(words == 2 ? rest[0] + " " + rest[1] : rest[0]);
        if (command == null) {
            List<String> subcommands = commands.keySet().stream().filter(name -> name.startsWith(rest[0] + " "))
                    .map(name -> name.substring(rest[0].length() + 1)).toList();
            if (!subcommands.isEmpty()) {
                if (rest.length > 1 && (rest[1].equals("--help") || rest[1].equals("-h"))) {
                    printGroupHelp(rest[0], out);
                    return OK;
                }
                err.println("mixtune " + rest[0] + ": " + (rest.length > 1 ? "unknown "
                        + "subcommand '" + rest[1] + "': " : "") + "expected one of " + subcommands
                        + " (mixtune " + rest[0] + " --help lists them)");
                return USAGE;
            }
            err.println("mixtune: unknown command '" + rest[0] + "': expected one of " + commands.keySet()
                    + " (see mixtune --help)");
            return USAGE;
        }
        String[] commandArgs = Arrays.copyOfRange(rest, words, rest.length);
        if (Arrays.asList(commandArgs).contains("--help") || Arrays.asList(commandArgs).contains("-h")) {
            printCommandHelp(command, out);
            return OK;
        }
        try {
            TorchSetup.apply(allowDownload);
            CommandLine line = new DefaultParser().parse(command.options(), commandArgs);
            List<String> positional = line.getArgList();
            List<String> expected = command.arguments();
            if (positional.size() > expected.size()) {
                throw new UsageException("unexpected argument '" + positional.get(expected.size()) + "'");
            }
            if (positional.size() < command.requiredArguments()) {
                throw new UsageException("missing " + String.join(" ", expected.subList(positional.size(),
                        command.requiredArguments())));
            }
            return command.run(line, out);
        } catch (ParseException | UsageException | InvalidOptionException | NoGpuException e) {
            err.println("mixtune " + command.name() + ": " + e.getMessage() + " (see mixtune " + command.name()
                    + " --help)");
            if (verbose) {
                e.printStackTrace(err);
            }
            return USAGE;
        } catch (RecipeException e) {
            // Input the user must fix, with every problem on its own line: what the recipe says, not how it was called.
            for (String problem : e.problems()) {
                err.println("mixtune " + command.name() + ": " + problem.replace('\n', ' '));
            }
            if (verbose) {
                e.printStackTrace(err);
            }
            return USAGE;
        } catch (InvalidRecordException | Refusal | CheckpointException e) {
            // a checkpoint cut short or malformed is the user's to fix (download it again), named with its file
            err.println("mixtune " + command.name() + ": " + oneLine(e));
            if (verbose) {
                e.printStackTrace(err);
            }
            return USAGE;
        } catch (Exception | OutOfMemoryError e) {
            String notLoaded = TorchSetup.loadFailure(e);
            if (notLoaded != null) {
                // the set-up is the user's to fix, as a refused device: gpu is
                err.println("mixtune " + command.name() + ": libtorch " + notLoaded);
                if (verbose) {
                    e.printStackTrace(err);
                }
                return USAGE;
            }
            err.println("mixtune " + command.name() + ": " + oneLine(e));
            if (verbose) {
                e.printStackTrace(err);
            }
            return FAILURE;
        }
    }

    private static String oneLine(Throwable e) {
        String message = e.getMessage() == null ? e.getClass().getSimpleName() : e.getMessage();
        return message.replace('\n', ' ');
    }

    private void printOverview(PrintStream out) {
        out.println("mixtune: fine-tune Mistral and Mixtral models with QLoRA.");
        out.println();
        out.println("usage: mixtune <command> [options]   (mixtune <command> --help for its options)");
        out.println();
        out.println("commands:");
        for (Command command : commands.values()) {
            out.printf("  %-14s %s%n", command.name(), command.summary());
        }
        out.println();
        out.println("global options:");
        out.println("  --verbose          print stack traces with errors");
        out.println("  --allow-download   let DJL download a CUDA libtorch once into its cache (also "
                + "MIXTUNE_ALLOW_DOWNLOAD=1); run time is offline otherwise (see mixtune env)");
    }

    /** `mixtune recipes --help`: the group's subcommands, each with its usage and what it does. */
    private void printGroupHelp(String group, PrintStream out) {
        out.println("usage: mixtune " + group + " <subcommand> [options]   (mixtune " + group
                + " <subcommand> --help for its options)");
        out.println();
        out.println("subcommands:");
        for (Command command : commands.values()) {
            if (command.name().startsWith(group + " ")) {
                String usage = command.usage().isEmpty() ? "" : " " + command.usage();
                out.println("  " + command.name().substring(group.length() + 1) + usage);
                RecipesCommand.wrap(command.summary(), RecipesCommand.LINE_WIDTH - 6)
                        .forEach(line -> out.println("      " + line));
            }
        }
        out.println();
        out.println("Exit codes: 0 ok, 1 failure, 2 usage or input error.");
    }

    private static void printCommandHelp(Command command, PrintStream out) {
        PrintWriter writer = new PrintWriter(out);
        Options options = command.options();
        new HelpFormatter().printHelp(writer, 100, "mixtune " + command.name() + " " + command.usage(),
                command.summary(), options, 2, 2, "\nExit codes: 0 ok, 1 failure, 2 usage or input error (the command "
                        + "line, a recipe, a data record, a damaged checkpoint).", false);
        writer.flush();
    }

    static Option option(String longName, String argName, String description) {
        return Option.builder().longOpt(longName).hasArg(argName != null).argName(argName).desc(description).build();
    }

    static int intOption(CommandLine line, String name, int fallback) {
        String value = line.getOptionValue(name);
        if (value == null) {
            return fallback;
        }
        try {
            return Integer.parseInt(value.trim());
        } catch (NumberFormatException e) {
            throw new UsageException("--" + name + " expects an integer, got '" + value + "'");
        }
    }

    static double doubleOption(CommandLine line, String name, double fallback) {
        String value = line.getOptionValue(name);
        if (value == null) {
            return fallback;
        }
        try {
            return Double.parseDouble(value.trim());
        } catch (NumberFormatException e) {
            throw new UsageException("--" + name + " expects a number, got '" + value + "'");
        }
    }

    /** --device auto|cpu|gpu, as model.device in a recipe. */
    static Option deviceOption() {
        return option("device", "D", "auto (the GPU when libtorch has CUDA and sees one, else the CPU; default), "
                + "cpu or gpu (fails with the set-up steps when no GPU is usable; see mixtune env)");
    }

    static Device device(CommandLine line) {
        String value = line.getOptionValue("device", "auto");
        if (!List.of("auto", "cpu", "gpu").contains(value)) {
            throw new UsageException("--device expects auto, cpu or gpu, got '" + value + "'");
        }
        try {
            return ComputeDevice.choose(value);
        } catch (NoGpuException e) {
            throw new NoGpuException("--" + e.getMessage());
        }
    }

    static String requiredOption(CommandLine line, String name) {
        String value = line.getOptionValue(name);
        if (value == null) {
            throw new UsageException("missing required option --" + name);
        }
        return value;
    }
}
