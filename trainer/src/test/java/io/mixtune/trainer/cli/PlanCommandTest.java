package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.config.ModelPreset;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class PlanCommandTest {
    private static final String MIXTRAL_RECIPE = "../recipes/mixtral-8x7b-qlora-sft.yaml";
    private static final String CHATS = "data.files=[" + Path.of("../data/samples/chats.jsonl").toAbsolutePath() + "]";
    private static final double GIB = 1L << 30;

    @Test
    void mixtralRecipeSaysWhichGpuSizesItFits() {
        MixtuneCliTest.Result plan = MixtuneCliTest.run("plan", "--recipe", MIXTRAL_RECIPE, "--set", CHATS);
        assertEquals(0, plan.code(), plan.err());
        String out = plan.out();
        assertTrue(out.contains("mixtral, 32 layers, 8 experts (top 2)") && out.contains("fp16 compute, on a GPU")
                && out.contains("micro-batch 1 x 1024 tokens") && out.contains("gradient checkpointing on"), out);

        // Hand-computed from Mixtral-8x7B's shapes: every attention and expert projection in NF4 at bitsandbytes'
        // 0.5 + 1/64 + 4/(64 x 256) bytes a weight, and r 16 LoRA on each of them (r x (in + out) weights).
        long h = 4096;
        long inter = 14336;
        long attention = 2 * h * h + 2 * h * 1024;
        long experts = 8 * 3 * h * inter;
        double nf4Gib = 32 * (attention + experts) * (0.5 + 1.0 / 64 + 4.0 / (64 * 256)) / GIB;
        long lora = 32 * (16 * (h + h) * 2 + 16 * (h + 1024) * 2 + 8 * 3 * 16 * (h + inter));
        assertEquals(nf4Gib, gib(out, "quantized weights (NF4)"), 0.01);
        assertEquals(lora * 4 / GIB, gib(out, "LoRA adapter (fp32)"), 0.01);
        assertEquals(lora * 4 / GIB, gib(out, "LoRA gradients (fp32)"), 0.01);
        assertEquals(lora * 8 / GIB, gib(out, "AdamW moments (2 x fp32)"), 0.01);
        // The embeddings (32000 x 4096) and the norms in fp32, the lm_head (32000 x 4096) and the routers in fp16.
        assertEquals((32000 * h + 65 * h) * 4 / GIB, gib(out, "embeddings and norms (fp32)"), 0.01);
        assertEquals((32000 * h + 32 * 8 * h) * 2 / GIB, gib(out, "full-precision linear weights (fp16)"), 0.01);
        // Checkpointing keeps one [1, 1024, 4096] input per layer, the float32 residual, and the fp16 router logits.
        assertEquals(32 * 1024 * (h * 4 + 8 * 2) / GIB, gib(out, "layer inputs (checkpoints)"), 0.01);

        double total = gib(out, "total");
        assertTrue(gib(out, "total with checkpointing off") > 2 * total, out);
        for (int size : new int[] {24, 32, 40, 80}) {
            String row = line(out, size + " GB ");
            String fits = total <= size ? "yes" : "no";
            assertTrue(row.matches(size + " GB\\s+" + fits + "\\s+[+-]\\d+\\.\\d\\d GiB"), row);
            assertEquals(size - total, Double.parseDouble(row.replaceAll(".*\\s([+-][\\d.]+) GiB", "$1")), 0.006);
        }
        assertTrue(line(out, "24 GB ").contains(" no "), out); // 22 GiB of NF4 weights alone leave no room
        assertTrue(line(out, "80 GB ").contains(" yes "), out);
    }

    /**
     * A DPO micro-batch of one pair is two rows (chosen and rejected), and Stage-DPO holds its frozen reference as a
     * second adapter: the plan counts both, the SFT recipe's plan neither.
     */
    @Test
    void theDpoRecipePlansTwoRowsAPairAndTheReferenceAdapter() {
        MixtuneCliTest.Result plan = MixtuneCliTest.run("plan", "--recipe", "../recipes/mixtral-8x7b-qlora-dpo.yaml");
        assertEquals(0, plan.code(), plan.err());
        String out = plan.out();
        assertTrue(out.contains("micro-batch 2 x 1024 tokens, at most 2,046 target positions"), out);
        assertEquals(gib(out, "LoRA adapter (fp32)"), gib(out, "reference adapter (fp32)"), 1e-9);
        MixtuneCliTest.Result sft = MixtuneCliTest.run("plan", "--recipe", MIXTRAL_RECIPE, "--set", CHATS);
        assertTrue(!sft.out().contains("reference adapter"), sft.out());
        assertEquals(2 * gib(sft.out(), "layer inputs (checkpoints)"), gib(out, "layer inputs (checkpoints)"), 0.001);
    }

    /**
     * The weight averages live on the training's device: one adapter copy for EMA, one for SWA, LaWA's k snapshots and
     * their mean; a recipe without averaging plans none.
     */
    @Test
    void averagingPlansItsAdapterCopies() {
        MixtuneCliTest.Result plan = MixtuneCliTest.run("plan", "--recipe", MIXTRAL_RECIPE, "--set", CHATS,
                "--set", "averaging.ema_decay=0.999", "--set", "averaging.swa_start=0.75", "--set",
                "averaging.lawa_k=3");
        assertEquals(0, plan.code(), plan.err());
        String out = plan.out();
        assertEquals(6 * gib(out, "LoRA adapter (fp32)"), gib(out, "weight averages (fp32)"), 0.035); // rounded rows
        assertTrue(out.contains("6 adapter copies beside training: EMA, SWA, LaWA 4"), out);
        MixtuneCliTest.Result without = MixtuneCliTest.run("plan", "--recipe", MIXTRAL_RECIPE, "--set", CHATS);
        assertTrue(!without.out().contains("weight averages"), without.out());
        assertEquals(gib(without.out(), "total") + gib(out, "weight averages (fp32)"), gib(out, "total"), 0.01);
    }

    /**
     * A GRPO recipe whose grpo.reward_funcs names a reward model folder loads that model as a second copy of the base
     * (RewardScorer.load): the plan counts it, about the base's own weights (NF4, embeddings and norms), and a
     * built-in reward function adds nothing.
     */
    @Test
    void aGrpoRewardModelFolderIsPlannedAsASecondCopyOfTheBase(@TempDir Path dir) throws IOException {
        Path rewardModel = Files.createDirectories(dir.resolve("reward-adapter"));
        Files.copy(Path.of("../lora/src/test/resources/golden/peft/peft-attention/adapter_config.json"),
                rewardModel.resolve("adapter_config.json"));
        String[] grpo = {"--set", "train.method=grpo", "--set", "train.gradient_accumulation=16", "--set",
            "grpo.num_generations=8", "--set", "data.files=[" + Path.of("../data/samples/prompts.jsonl")
                    .toAbsolutePath() + "]"};
        MixtuneCliTest.Result with = MixtuneCliTest.run(concat(new String[] {"plan", "--recipe", MIXTRAL_RECIPE,
            "--set", "grpo.reward_funcs=[" + rewardModel + "]"}, grpo));
        assertEquals(0, with.code(), with.err());
        MixtuneCliTest.Result without = MixtuneCliTest.run(concat(new String[] {"plan", "--recipe", MIXTRAL_RECIPE,
            "--set", "grpo.reward_funcs=[think_format_reward]"}, grpo));
        assertEquals(0, without.code(), without.err());
        assertTrue(!without.out().contains("reward model weights"), without.out());
        double base = gib(with.out(), "quantized weights (NF4)") + gib(with.out(), "embeddings and norms (fp32)");
        assertEquals(base, gib(with.out(), "reward model weights"), 0.05 * base);
        assertEquals(gib(without.out(), "total") + gib(with.out(), "reward model weights"), gib(with.out(), "total"),
                0.015);
    }

    private static String[] concat(String[] first, String[] second) {
        String[] out = Arrays.copyOf(first, first.length + second.length);
        System.arraycopy(second, 0, out, first.length, second.length);
        return out;
    }

    @Test
    void componentsSumToTheTotalAndDeviceMemoryGivesOneRow() {
        MixtuneCliTest.Result plan = MixtuneCliTest.run("plan", "--recipe", MIXTRAL_RECIPE, "--set", CHATS,
                "--device-memory", "48");
        assertEquals(0, plan.code(), plan.err());
        String out = plan.out();
        String table = out.substring(out.indexOf("component"), out.indexOf("\ntotal"));
        double sum = table.lines().skip(1).mapToDouble(l -> Double.parseDouble(l.substring(36, 46).trim())).sum();
        assertEquals(gib(out, "total"), sum, 0.01 * table.lines().count());
        assertTrue(out.contains("48 GB") && !out.contains("24 GB") && !out.contains("80 GB"), out);
    }

    @Test
    void checkpointingKeepsOneLayerOfActivationsInsteadOfAll() {
        String[] on = {"plan", "--recipe", MIXTRAL_RECIPE, "--set", CHATS};
        String[] off = Arrays.copyOf(on, on.length + 2);
        off[on.length] = "--set";
        off[on.length + 1] = "train.gradient_checkpointing=false";
        String withOut = MixtuneCliTest.run(off).out();
        String with = MixtuneCliTest.run(on).out();
        // Off: all 32 layers' activations and dequantized weights stay for backward (autograd keeps each W); on: one
        // layer's activations and one weight, an expert's w1 [14336, 4096] in fp16, dequantized again for its backward.
        long layerWeights = 4096L * (4096 + 1024 + 1024 + 4096) + 8 * 3 * 4096L * 14336;
        assertEquals(32 * layerWeights * 2 / GIB, gib(withOut, "dequantized weights (every layer)"), 0.005);
        assertEquals(14336L * 4096 * 2 / GIB, gib(with, "dequantized weight (one linear)"), 0.005);
        assertEquals(gib(with, "total with checkpointing off"), gib(withOut, "total"), 0.01);
    }

    @Test
    void unquantizedBaseHoldsEveryLinearWeightInTheComputeDtype() {
        String out = MixtuneCliTest.run("plan", "--recipe", MIXTRAL_RECIPE, "--set", CHATS, "--set",
                "model.quantize=none").out();
        long parameters = ModelPreset.load("mixtral-8x7b").parameterCount();
        long embeddingsAndNorms = 32000L * 4096 + 65 * 4096;
        assertEquals(embeddingsAndNorms * 4 / GIB, gib(out, "embeddings and norms (fp32)"), 0.01);
        assertEquals((parameters - embeddingsAndNorms) * 2 / GIB, gib(out, "full-precision linear weights (fp16)"),
                0.01);
        assertTrue(!out.contains("NF4") && !out.contains("dequantized"), out);
        assertTrue(line(out, "80 GB ").contains(" no "), out); // 87 GiB of fp16 weights
    }

    @Test
    void cpuRecipePlansForThisMachinesMemory(@TempDir Path dir) throws IOException {
        Path recipe = dir.resolve("tiny.yaml");
        Files.writeString(recipe, String.format(Locale.ROOT, """
                model: {preset: tiny-mistral}
                data: {files: [%s], max_seq_len: 256}
                train: {micro_batch_size: 2}
                output_dir: %s
                """, Path.of("../data/samples/chats.jsonl").toAbsolutePath(), dir.resolve("out")));
        MixtuneCliTest.Result plan = MixtuneCliTest.run("plan", "--recipe", recipe.toString());
        assertEquals(0, plan.code(), plan.err());
        assertTrue(plan.out().contains("fp32 compute, on a CPU") && plan.out().contains("dequantization staging"),
                plan.out());
        assertTrue(line(plan.out(), "memory ").startsWith("memory"), plan.out());
        assertTrue(Pattern.compile("(?m)^\\d[\\d.]* GB\\s+yes").matcher(plan.out()).find(), plan.out());
    }

    @Test
    void badRecipeFailsWithTheFileLineAndKey(@TempDir Path dir) throws IOException {
        Path recipe = dir.resolve("bad.yaml");
        Files.writeString(recipe, String.format(Locale.ROOT, """
                model: {preset: tiny-mistral}
                data: {files: [%s]}
                train:
                  micro_batch_sise: 2
                output_dir: out
                """, Path.of("../data/samples/chats.jsonl").toAbsolutePath()));
        MixtuneCliTest.Result plan = MixtuneCliTest.run("plan", "--recipe", recipe.toString());
        assertEquals(2, plan.code(), plan.out());
        assertTrue(plan.err().startsWith("mixtune plan: " + recipe + ":4") && plan.err().contains("micro_batch_sise")
                && plan.err().contains("micro_batch_size"), plan.err());
        assertEquals(1, plan.err().strip().lines().count(), plan.err());

        MixtuneCliTest.Result noRecipe = MixtuneCliTest.run("plan");
        assertEquals(2, noRecipe.code());
        assertTrue(noRecipe.err().contains("missing required option --recipe"), noRecipe.err());
        MixtuneCliTest.Result badMemory = MixtuneCliTest.run("plan", "--recipe", MIXTRAL_RECIPE, "--set", CHATS,
                "--device-memory", "-3");
        assertEquals(2, badMemory.code());
        assertTrue(badMemory.err().contains("--device-memory expects a positive number"), badMemory.err());
    }

    @Test
    void planIsListedInHelp() {
        assertTrue(MixtuneCliTest.run("--help").out().contains("plan "), "plan missing from mixtune --help");
        assertTrue(MixtuneCliTest.run("plan", "--help").out().contains("--device-memory"));
    }

    /** The GiB figure of the table row that starts with {@code name}. */
    private static double gib(String out, String name) {
        Matcher m = Pattern.compile("(?m)^" + Pattern.quote(name) + "\\s{2,}(\\d+\\.\\d\\d)\\s").matcher(out);
        assertTrue(m.find(), "no row \"" + name + "\" in\n" + out);
        return Double.parseDouble(m.group(1));
    }

    private static String line(String out, String start) {
        return out.lines().filter(l -> l.startsWith(start)).findFirst()
                .orElseThrow(() -> new AssertionError("no line starting with \"" + start + "\" in\n" + out));
    }
}
