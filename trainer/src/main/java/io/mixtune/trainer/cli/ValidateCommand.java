package io.mixtune.trainer.cli;

import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.io.PrintStream;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/** `mixtune validate`: reads and checks a recipe without loading anything, and prints it resolved. */
final class ValidateCommand implements Command {
    @Override
    public String name() {
        return "validate";
    }

    @Override
    public String summary() {
        return "check a recipe (keys, types, ranges, files) and print it with every default filled in";
    }

    @Override
    public String usage() {
        return "--recipe R.yaml [--set key.path=value ...]";
    }

    @Override
    public Options options() {
        return new Options().addOption(Mixtune.option("recipe", "FILE", "the recipe to check"))
                .addOption(TrainCommand.setOption());
    }

    @Override
    public int run(CommandLine line, PrintStream out) {
        Recipe recipe = TrainCommand.readRecipe(line);
        out.print(RecipeReader.toYaml(recipe));
        out.println("# " + line.getOptionValue("recipe") + ": ok");
        return Mixtune.OK;
    }
}
