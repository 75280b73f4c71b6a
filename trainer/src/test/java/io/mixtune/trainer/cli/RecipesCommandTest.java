package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.config.ModelPreset;
import io.mixtune.trainer.recipe.BundledRecipes;
import io.mixtune.trainer.recipe.Recipe;
import io.mixtune.trainer.recipe.RecipeReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `mixtune recipes list | show | copy` on the recipes packed into the jar, and the ready recipes themselves: each one
 * validates, a copy validates from a directory that holds nothing else, and the big ones say what the issue asks.
 */
class RecipesCommandTest {
    /** The repository's recipes/ (tests run in trainer/). */
    private static final Path RECIPES = Path.of("../recipes");

    private static List<Path> repositoryRecipes() throws IOException {
        try (Stream<Path> files = Files.list(RECIPES)) {
            return files.filter(f -> f.toString().endsWith(".yaml")).sorted().toList();
        }
    }

    @Test
    void theJarHoldsExactlyTheRecipesFolder() throws IOException {
        List<String> inFolder = new ArrayList<>();
        for (Path file : repositoryRecipes()) {
            String name = file.getFileName().toString().replace(".yaml", "");
            inFolder.add(name);
            assertEquals(Files.readString(file), BundledRecipes.text(name), name + " differs from its bundled copy");
        }
        assertEquals(inFolder, BundledRecipes.list().stream().map(BundledRecipes.Entry::name).toList());
        assertTrue(inFolder.containsAll(List.of("quickstart", "mixtral-8x7b-qlora-sft", "mistral-7b-qlora-sft")),
                inFolder.toString());
    }

    @Test
    void everyReadyRecipeValidates() throws IOException {
        for (Path file : repositoryRecipes()) {
            Recipe recipe = RecipeReader.read(file, List.of()).recipe();
            assertFalse(BundledRecipes.text(file.getFileName().toString()).lines().findFirst().orElse("").isBlank());
            MixtuneCliTest.Result validate = MixtuneCliTest.run("validate", "--recipe", file.toString());
            assertEquals(0, validate.code(), file + ": " + validate.err());
            assertTrue(validate.out().contains("output_dir: " + recipe.outputDir()), validate.out());
        }
    }

    @Test
    void listShowsNameAndTheFirstWholeSentenceWrapped() {
        MixtuneCliTest.Result list = MixtuneCliTest.run("recipes", "list");
        assertEquals(0, list.code(), list.err());
        List<String> lines = list.out().lines().toList();
        assertTrue(lines.stream().allMatch(l -> l.length() <= 100), list.out());
        // The DPO recipes' first sentences run over two comment lines; they were cut at the first line's end.
        String joined = list.out().replaceAll("\n +", " ").replaceAll(" {2,}", "  ");
        assertTrue(joined.contains("quickstart-dpo  The DPO quickstart: Stage-DPO (2 stages) with LoRA on the tiny "
                + "Mistral preset (random weights, written once to output_dir/base-model) over the 200 bundled "
                + "preference pairs, on CPU in about a minute.\n"), list.out());
        assertTrue(joined.contains("mixtral-8x7b-qlora-dpo  Mixtral-8x7B QLoRA Stage-DPO (2 stages) with the "
                + "alignment-handbook's Zephyr-7B-beta QLoRA DPO settings: beta 0.1, lr 5e-6 cosine, r 16, 32 pairs a "
                + "step.\n"), list.out());
        for (BundledRecipes.Entry entry : BundledRecipes.list()) {
            assertTrue(entry.description().endsWith("."), "a whole sentence: " + entry.description());
        }
        assertTrue(joined.contains("quickstart  Quickstart: QLoRA SFT of the tiny Mixtral preset on the 200 "
                + "sample chats, on CPU.\n"), list.out());
        assertTrue(joined.contains("mixtral-8x7b-qlora-sft  Mixtral-8x7B QLoRA SFT with Firefly's published "
                + "settings"), list.out());
    }

    @Test
    void showPrintsTheRecipeAsWritten() throws IOException {
        MixtuneCliTest.Result show = MixtuneCliTest.run("recipes", "show", "mixtral-8x7b-qlora-sft");
        assertEquals(0, show.code(), show.err());
        assertEquals(Files.readString(RECIPES.resolve("mixtral-8x7b-qlora-sft.yaml")), show.out());
        assertEquals(show.out(), MixtuneCliTest.run("recipes", "show", "mixtral-8x7b-qlora-sft.yaml").out());

        MixtuneCliTest.Result typo = MixtuneCliTest.run("recipes", "show", "quickstrat");
        assertEquals(2, typo.code());
        assertEquals(1, typo.err().strip().lines().count(), typo.err());
        assertTrue(typo.err().contains("no ready recipe named 'quickstrat' (did you mean quickstart?)"), typo.err());
        MixtuneCliTest.Result missing = MixtuneCliTest.run("recipes", "show");
        assertEquals(2, missing.code());
        assertTrue(missing.err().contains("missing NAME"), missing.err());
        assertEquals(2, MixtuneCliTest.run("recipes", "show", "quickstart", "extra").code());
        MixtuneCliTest.Result unknown = MixtuneCliTest.run("recipes", "frobnicate");
        assertEquals(2, unknown.code());
        assertTrue(unknown.err().contains("expected one of [list, show, copy"), unknown.err());
    }

    @Test
    void importTurnsAnAxolotlConfigIntoARecipeThatValidatesButForItsHubIds(@TempDir Path dir) throws IOException {
        Path recipe = dir.resolve("mistral.yaml");
        MixtuneCliTest.Result imported = MixtuneCliTest.run("recipes", "import", "../configs/axolotl/mistral-qlora.yml",
                "--out", recipe.toString());
        assertEquals(0, imported.code(), imported.err());
        assertTrue(imported.out().startsWith("wrote " + recipe + ": "), imported.out());
        assertTrue(imported.out().contains("not mapped (") && !imported.out().contains(": optimizer: "),
                imported.out());
        assertTrue(Files.readString(recipe).contains("optimizer: adamw_bnb_8bit"), Files.readString(recipe));
        assertTrue(Files.readString(recipe).contains("  r: 32   # axolotl: lora_r\n"), Files.readString(recipe));
        MixtuneCliTest.Result validate = MixtuneCliTest.run("validate", "--recipe", recipe.toString());
        assertEquals(2, validate.code(), validate.out());
        List<String> problems = validate.err().strip().lines().toList();
        assertEquals(2, problems.size(), validate.err());
        assertTrue(problems.get(0).contains("model.path") && problems.get(0).contains("mistralai/Mistral-7B-v0.1"),
                problems.get(0));
        assertTrue(problems.get(1).contains("data.files[0]") && problems.get(1).contains("mhenrichsen/alpaca_2k_test"),
                problems.get(1));
        assertEquals(2, MixtuneCliTest.run("recipes", "import", "../configs/axolotl/mistral-qlora.yml", "--out",
                recipe.toString()).code(), "an existing file is kept without --force");
        // --out onto the axolotl config itself would replace the input with the recipe, --force or not (it did).
        Path axolotl = Files.copy(Path.of("../configs/axolotl/mistral-qlora.yml"), dir.resolve("axolotl.yml"));
        byte[] config = Files.readAllBytes(axolotl);
        MixtuneCliTest.Result onItself = MixtuneCliTest.run("recipes", "import", axolotl.toString(), "--out",
                axolotl.toString(), "--force");
        assertEquals(2, onItself.code(), onItself.out() + onItself.err());
        assertTrue(onItself.err().contains("--out " + axolotl + " is the axolotl config being imported"),
                onItself.err());
        assertArrayEquals(config, Files.readAllBytes(axolotl));
        MixtuneCliTest.Result printed = MixtuneCliTest.run("recipes", "import", "../configs/axolotl/mixtral-qlora.yml");
        assertEquals(0, printed.code(), printed.err());
        assertTrue(printed.out().startsWith("# Imported from the axolotl config mixtral-qlora.yml by mixtune recipes"
                + " import.\n"), printed.out());
    }

    @Test
    void recipesAndDataHelpPrintTheirSubcommands() {
        MixtuneCliTest.Result recipes = MixtuneCliTest.run("recipes", "--help");
        assertEquals(0, recipes.code(), recipes.err());
        assertEquals("", recipes.err());
        assertTrue(recipes.out().startsWith("usage: mixtune recipes <subcommand>"), recipes.out());
        assertTrue(recipes.out().contains("\n  show NAME") && recipes.out().contains("\n  copy NAME DEST")
                && recipes.out().contains("\n  list\n      list the ready recipes"), recipes.out());
        MixtuneCliTest.Result data = MixtuneCliTest.run("data", "-h");
        assertEquals(0, data.code(), data.err());
        assertTrue(data.out().contains("\n  prepare --recipe") && data.out().contains("\n  preview --recipe"),
                data.out());
        MixtuneCliTest.Result none = MixtuneCliTest.run("recipes");
        assertEquals(2, none.code());
        assertTrue(none.err().contains("mixtune recipes --help lists them"), none.err());
    }

    @Test
    void copyWritesTheRecipeAndKeepsAnExistingFileUnlessForced(@TempDir Path dir) throws IOException {
        Path dest = dir.resolve("mine/sft.yaml");
        MixtuneCliTest.Result copy = MixtuneCliTest.run("recipes", "copy", "quickstart", dest.toString());
        assertEquals(0, copy.code(), copy.err());
        assertEquals(Files.readString(RECIPES.resolve("quickstart.yaml")), Files.readString(dest));
        assertTrue(copy.out().contains("mixtune validate --recipe " + dest), copy.out());

        Files.writeString(dest, "# edited\n");
        MixtuneCliTest.Result again = MixtuneCliTest.run("recipes", "copy", "mixtral-8x7b-qlora-sft", dest.toString());
        assertEquals(2, again.code(), again.err()); // an input to fix, as every refusal
        assertEquals(dest + " already exists: not overwritten (--force replaces it)",
                again.err().strip().replace("mixtune recipes copy: ", ""));
        assertEquals("# edited\n", Files.readString(dest));
        assertEquals(0, MixtuneCliTest.run("recipes", "copy", "mixtral-8x7b-qlora-sft", dest.toString(), "--force")
                .code());
        assertEquals(Files.readString(RECIPES.resolve("mixtral-8x7b-qlora-sft.yaml")), Files.readString(dest));

        // A directory as DEST receives NAME.yaml.
        assertEquals(0, MixtuneCliTest.run("recipes", "copy", "mistral-7b-qlora-sft", dir.toString()).code());
        assertTrue(Files.isRegularFile(dir.resolve("mistral-7b-qlora-sft.yaml")));
    }

    /**
     * A user with the jar alone: a copied recipe validates in a directory with nothing beside it, in a JVM started
     * there. Its defaults, model preset and sample chats all come from the jar.
     */
    @Test
    void aCopiedRecipeValidatesFromAnotherDirectory(@TempDir Path dir) throws Exception {
        for (String name : List.of("quickstart", "mixtral-8x7b-qlora-sft", "mistral-7b-qlora-sft", "quickstart-dpo",
                "mixtral-8x7b-qlora-dpo", "warm-reward")) {
            Path copy = dir.resolve(name + ".yaml");
            assertEquals(0, MixtuneCliTest.run("recipes", "copy", name, copy.toString()).code());
            Path log = dir.resolve(name + ".log");
            Process process = new ProcessBuilder(ProcessHandle.current().info().command().orElse("java"),
                    "-cp", System.getProperty("java.class.path"), Mixtune.class.getName(), "validate", "--recipe",
                    copy.getFileName().toString())
                    .directory(dir.toFile()).redirectErrorStream(true).redirectOutput(log.toFile()).start();
            assertTrue(process.waitFor(120, TimeUnit.SECONDS));
            String output = Files.readString(log);
            assertEquals(0, process.exitValue(), output);
            assertTrue(output.contains("# " + copy.getFileName() + ": ok"), output);
        }
    }

    /** The numbers issue #5 names for the Firefly recipe, as the reader resolves them. */
    @Test
    void theMixtralRecipeHoldsFireflysSettings() {
        Recipe recipe = RecipeReader.read(RECIPES.resolve("mixtral-8x7b-qlora-sft.yaml"), List.of()).recipe();
        assertEquals("mixtral-8x7b", recipe.model().preset());
        assertEquals(List.of("nf4", "fp16", "gpu"), List.of(recipe.model().quantize(), recipe.model().computeDtype(),
                recipe.model().device()));
        assertEquals(List.of("all-linear"), recipe.lora().targets());
        assertEquals(List.of(16.0, 16.0, 0.05), List.of((double) recipe.lora().r(), recipe.lora().alpha(),
                recipe.lora().dropout()));
        Recipe.Train train = recipe.train();
        assertEquals(1e-4, train.lr());
        assertEquals("constant", train.schedule());
        assertEquals(100, train.warmupSteps());
        assertEquals(List.of(1, 16), List.of(train.microBatchSize(), train.gradientAccumulation()));
        assertEquals(1024, recipe.data().maxSeqLen());
        assertEquals(0.3, train.maxGradNorm());
        assertTrue(train.gradientCheckpointing());

        Recipe mistral = RecipeReader.read(RECIPES.resolve("mistral-7b-qlora-sft.yaml"), List.of()).recipe();
        assertEquals(List.of("mistral-7b", "nf4", "cosine"), List.of(mistral.model().preset(),
                mistral.model().quantize(), mistral.train().schedule()));
        assertEquals(2e-4, mistral.train().lr());
        assertEquals(2048, mistral.data().maxSeqLen());
        assertTrue(mistral.data().packing());
    }

    /** The numbers issue #6 names for the DPO recipes: beta 0.1, lr 5e-6, 2 stages; the quickstart on the tiny model. */
    @Test
    void theDpoRecipesHoldIssueSixsSettings() {
        Recipe mixtral = RecipeReader.read(RECIPES.resolve("mixtral-8x7b-qlora-dpo.yaml"), List.of()).recipe();
        assertEquals(List.of("dpo", "mixtral-8x7b", "nf4"), List.of(mixtral.train().method(),
                mixtral.model().preset(), mixtral.model().quantize()));
        assertEquals(List.of(0.1, 5e-6), List.of(mixtral.dpo().beta(), mixtral.train().lr()));
        assertEquals(2, mixtral.dpo().stageCount());
        assertEquals(List.of("sigmoid"), mixtral.dpo().loss());
        assertTrue(mixtral.train().gradientCheckpointing());
        assertEquals(32, mixtral.train().microBatchSize() * mixtral.train().gradientAccumulation());

        Recipe quickstart = RecipeReader.read(RECIPES.resolve("quickstart-dpo.yaml"), List.of()).recipe();
        assertEquals(List.of("dpo", "tiny-mistral", "auto"), List.of(quickstart.train().method(),
                quickstart.model().preset(), quickstart.model().device()));
        assertEquals(2, quickstart.dpo().stageCount());
        assertEquals(List.of("data/samples/preferences.jsonl"), quickstart.data().files());
    }

    /** --set model.path replaces the preset; training the preset itself is refused before anything loads. */
    @Test
    void aBigPresetTrainsOnlyOnACheckpointPath(@TempDir Path dir) throws IOException {
        Path recipe = RECIPES.resolve("mixtral-8x7b-qlora-sft.yaml");
        Path checkpoint = Files.createDirectories(dir.resolve("Mixtral-8x7B"));
        Files.writeString(checkpoint.resolve("config.json"),
                ModelPreset.load("mixtral-8x7b").toJson("bfloat16").toString());
        Recipe onPath = RecipeReader.read(recipe, List.of("model.path=" + checkpoint)).recipe();
        assertNull(onPath.model().preset());
        assertEquals(checkpoint.toString(), onPath.model().path());

        MixtuneCliTest.Result train = MixtuneCliTest.run("train", "--recipe", recipe.toString(), "--set",
                "output_dir=" + dir.resolve("out"));
        assertEquals(2, train.code());
        assertTrue(train.err().contains("model.preset: mixtral-8x7b holds the model's shapes (for memory plans), not "
                + "weights: train on the checkpoint with --set model.path=DIR"), train.err());
        assertFalse(Files.exists(dir.resolve("out")), "nothing is written before the refusal");
    }
}
