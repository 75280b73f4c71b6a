package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.model.safetensors.SafetensorsReader;
import io.mixtune.model.safetensors.SafetensorsWriter;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class MixtuneCliTest {

    record Result(int code, String out, String err) {
        String lastLine() {
            String[] lines = out.strip().split("\n");
            return lines[lines.length - 1];
        }
    }

    static Result run(String... args) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        int code = new Mixtune().run(args, new PrintStream(out, true, StandardCharsets.UTF_8),
                new PrintStream(err, true, StandardCharsets.UTF_8));
        return new Result(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
    }

    /** Every file under {@code dir} with its bytes (the lock file aside: each run writes its pid there). */
    static Map<String, byte[]> snapshot(Path dir) throws IOException {
        Map<String, byte[]> files = new TreeMap<>();
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path file : walk.filter(Files::isRegularFile).toList()) {
                if (!file.getFileName().toString().equals(".mixtune.lock")) {
                    files.put(dir.relativize(file).toString(), Files.readAllBytes(file));
                }
            }
        }
        return files;
    }

    static void assertSameFiles(Map<String, byte[]> expected, Map<String, byte[]> actual) {
        assertEquals(expected.keySet(), actual.keySet());
        expected.forEach((name, bytes) -> assertArrayEquals(bytes, actual.get(name), name + " changed"));
    }

    @Test
    void helpListsCommands() {
        Result help = run("--help");
        assertEquals(0, help.code());
        assertTrue(help.out().contains("generate") && help.out().contains("init-model"), help.out());
        for (String command : List.of("eval", "recipes list", "recipes show", "recipes copy", "validate")) {
            assertTrue(help.out().contains("\n  " + command + " "), command + " missing from:\n" + help.out());
        }
        Result generateHelp = run("generate", "--help");
        assertEquals(0, generateHelp.code());
        assertTrue(generateHelp.out().contains("--dump-logits"), generateHelp.out());
    }

    @Test
    void usageErrorsExitWithTwoAndOneLine() {
        Result unknown = run("frobnicate");
        assertEquals(2, unknown.code());
        assertTrue(unknown.err().contains("unknown command 'frobnicate'"), unknown.err());
        Result badOption = run("generate", "--model", "x", "--bogus");
        assertEquals(2, badOption.code());
        assertEquals(1, badOption.err().strip().lines().count(), badOption.err());
        Result noPrompt = run("generate", "--model", "x");
        assertEquals(2, noPrompt.code());
        assertTrue(noPrompt.err().contains("exactly one of --prompt and --prompt-ids"), noPrompt.err());
        assertEquals(2, run("init-model", "--preset", "no-such", "--out", "x").code());
    }

    /** A failure, not an input error: a model too big for this machine. */
    @Test
    void failuresExitWithOneAndNoStackTraceUnlessVerbose(@TempDir Path dir) throws IOException {
        Result huge = run("init-model", "--preset", "mixtral-8x7b", "--out", dir.toString());
        assertEquals(1, huge.code());
        assertEquals(1, huge.err().strip().lines().count(), huge.err());
        assertTrue(huge.err().contains("46.7B parameters"), huge.err());
        assertFalse(huge.err().contains("\tat "), huge.err());
        Result verbose = run("--verbose", "init-model", "--preset", "mixtral-8x7b", "--out", dir.toString());
        assertEquals(1, verbose.code());
        assertTrue(verbose.err().contains("\tat "), verbose.err());
    }

    /**
     * A damaged safetensors file (cut short, a header that is not JSON) is the user's input to fix: every command that
     * loads a model or an adapter exits 2 with one line naming the file and what is wrong, as train and validate do
     * (their recipe check reads the headers). generate, chat, eval, merge and merge-adapter exited 1 before.
     */
    @Test
    void aDamagedSafetensorsFileIsAnInputErrorForEveryCommand(@TempDir Path dir) throws IOException {
        Path model = dir.resolve("tiny");
        assertEquals(0, run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        Path adapter = dir.resolve("adapter");
        assertEquals(0, run("init-adapter", "--model", model.toString(), "--out", adapter.toString(), "--r", "2")
                .code());
        byte[] weights = Files.readAllBytes(model.resolve("model.safetensors"));
        Path cut = copy(model, dir.resolve("cut"));
        Files.write(cut.resolve("model.safetensors"), Arrays.copyOf(weights, weights.length / 2));
        Path notJson = copy(model, dir.resolve("not-json"));
        byte[] garbage = "\u0010\0\0\0\0\0\0\0not json at all!".getBytes(StandardCharsets.ISO_8859_1);
        Files.write(notJson.resolve("model.safetensors"), garbage);
        Path cutAdapter = copy(adapter, dir.resolve("cut-adapter"));
        Path adapterWeights = cutAdapter.resolve("adapter_model.safetensors");
        Files.write(adapterWeights, Arrays.copyOf(Files.readAllBytes(adapterWeights), 100));
        String cutShort = cut.resolve("model.safetensors") + ": tensor '"; // the first past the end: data_offsets ...
        String headerNotJson = notJson.resolve("model.safetensors") + ": header is not valid JSON";
        Path chats = Files.writeString(dir.resolve("chats.jsonl"), "{\"messages\": [{\"role\": \"user\", "
                + "\"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n");

        Map<List<String>, String> cases = new LinkedHashMap<>();
        cases.put(List.of("generate", "--model", cut.toString(), "--prompt-ids", "1,2"), cutShort);
        cases.put(List.of("generate", "--model", notJson.toString(), "--prompt-ids", "1,2"), headerNotJson);
        cases.put(List.of("generate", "--model", model.toString(), "--adapter", cutAdapter.toString(), "--prompt-ids",
                "1,2"), adapterWeights + ": header length");
        cases.put(List.of("chat", "--model", cut.toString()), cutShort);
        cases.put(List.of("eval", "--model", cut.toString(), "--data", chats.toString()), cutShort);
        cases.put(List.of("eval", "--model", model.toString(), "--adapter", cutAdapter.toString(), "--data",
                chats.toString()), adapterWeights + ": header length");
        cases.put(List.of("merge", "--method", "linear", "--inputs", model + "," + cut, "--out",
                dir.resolve("merged").toString()), cutShort);
        cases.put(List.of("merge", "--method", "linear", "--inputs", notJson + "," + model, "--out",
                dir.resolve("merged").toString()), headerNotJson);
        cases.put(List.of("merge-adapter", "--model", cut.toString(), "--adapter", adapter.toString(), "--out",
                dir.resolve("merged").toString()), cutShort);
        cases.put(List.of("merge-adapter", "--model", model.toString(), "--adapter", cutAdapter.toString(), "--out",
                dir.resolve("merged").toString()), adapterWeights + ": header length");
        for (Map.Entry<List<String>, String> c : cases.entrySet()) {
            Result result = run(c.getKey().toArray(String[]::new));
            assertEquals(2, result.code(), c.getKey() + ": " + result.err());
            assertEquals(1, result.err().strip().lines().count(), c.getKey() + ": " + result.err());
            assertTrue(result.err().startsWith("mixtune " + c.getKey().get(0) + ": " + c.getValue()),
                    c.getKey() + ": " + result.err());
        }
        assertFalse(Files.exists(dir.resolve("merged")), "nothing written");
        Result verbose = run("--verbose", "generate", "--model", cut.toString(), "--prompt-ids", "1");
        assertEquals(2, verbose.code());
        assertTrue(verbose.err().contains("\tat "), verbose.err());
    }

    private static Path copy(Path from, Path to) throws IOException {
        Files.createDirectories(to);
        try (Stream<Path> files = Files.list(from)) {
            for (Path file : files.toList()) {
                Files.copy(file, to.resolve(file.getFileName()));
            }
        }
        return to;
    }

    /** --layers keeps a preset's per-layer shapes with fewer layers (bench/gpu's 7B- and 8x7B-shaped checkpoints). */
    @Test
    void initModelWithFewerLayers(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("one-layer");
        Result init = run("init-model", "--preset", "tiny-mixtral", "--layers", "1", "--out", model.toString());
        assertEquals(0, init.code(), init.err());
        assertTrue(Files.readString(model.resolve("config.json")).contains("\"num_hidden_layers\" : 1"),
                Files.readString(model.resolve("config.json")));
        try (SafetensorsReader reader = SafetensorsReader.open(model)) {
            assertTrue(reader.contains("model.layers.0.block_sparse_moe.experts.3.w2.weight"));
            assertFalse(reader.contains("model.layers.1.input_layernorm.weight"));
        }
        assertEquals(2, run("init-model", "--preset", "tiny-mixtral", "--layers", "0", "--out", model.toString(),
                "--force").code());
    }

    @Test
    void initModelThenGenerate(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("tiny");
        Result init = run("init-model", "--preset", "tiny-mistral", "--out", model.toString(), "--seed", "3");
        assertEquals(0, init.code(), init.err());
        assertTrue(Files.exists(model.resolve("tokenizer.json")));
        assertEquals(2, run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code(),
                "an existing checkpoint is not overwritten without --force");

        Path logits = dir.resolve("logits.safetensors");
        Result byIds = run("generate", "--model", model.toString(), "--prompt-ids", "1,415,2936,9060",
                "--max-new-tokens", "5", "--greedy", "--output-ids", "--dump-logits", logits.toString());
        assertEquals(0, byIds.code(), byIds.err());
        assertEquals(5, byIds.lastLine().split(",").length, byIds.out());
        try (SafetensorsReader reader = SafetensorsReader.open(logits)) {
            assertArrayEquals(new long[] {4, 32000}, reader.info("logits").shape());
        }

        // "The quick brown" is 1,415,2936,9060 in the Mistral v1 vocabulary: text and ids give the same tokens.
        Result byText = run("generate", "--model", model.toString(), "--prompt", "The quick brown",
                "--max-new-tokens", "5", "--output-ids");
        assertEquals(0, byText.code(), byText.err());
        assertEquals(byIds.lastLine(), byText.lastLine());

        Result sampled = run("generate", "--model", model.toString(), "--prompt-ids", "1,415", "--temperature", "0.8",
                "--top-p", "0.9", "--seed", "7", "--max-new-tokens", "6", "--output-ids");
        Result again = run("generate", "--model", model.toString(), "--prompt-ids", "1,415", "--temperature", "0.8",
                "--top-p", "0.9", "--seed", "7", "--max-new-tokens", "6", "--output-ids");
        assertEquals(0, sampled.code(), sampled.err());
        assertEquals(sampled.lastLine(), again.lastLine(), "the same seed gives the same sample");
    }

    /**
     * A base model with a NaN weight: generate and eval printed <unk>s and NaN with exit 0, train blamed the learning
     * rate. Each now stops at load, naming the file and the tensor, as an input error (exit 2: the checkpoint is the
     * user's to replace, as a damaged one is).
     */
    @Test
    void aModelWithANaNWeightIsRefusedAtLoadByEveryCommand(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("tiny");
        assertEquals(0, run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        Path weights = model.resolve("model.safetensors");
        String tensor = "model.layers.1.mlp.up_proj.weight";
        List<SafetensorsWriter.TensorSpec> specs = new java.util.ArrayList<>();
        List<float[]> data = new java.util.ArrayList<>();
        try (SafetensorsReader reader = SafetensorsReader.open(weights)) {
            for (String name : reader.names()) {
                specs.add(new SafetensorsWriter.TensorSpec(name, reader.info(name).dtype(), reader.info(name).shape()));
                float[] values = reader.readFloats(name);
                if (name.equals(tensor)) {
                    values[100] = Float.NaN;
                    values[200] = Float.NaN;
                }
                data.add(values);
            }
        }
        SafetensorsWriter.writeFile(weights, specs, spec -> data.get(specs.indexOf(spec)));
        String expected = weights + ": tensor '" + tensor + "': 2 NaN value(s) of 12288 (the first at element 100)";

        Result generate = run("generate", "--model", model.toString(), "--prompt-ids", "1,415", "--max-new-tokens", "2");
        assertEquals(2, generate.code(), generate.out());
        assertTrue(generate.err().startsWith("mixtune generate: " + expected), generate.err());
        Path chats = Files.writeString(dir.resolve("chats.jsonl"), "{\"messages\": [{\"role\": \"user\", \"content\": "
                + "\"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n");
        for (String quantize : List.of("none", "nf4")) {
            Result eval = run("eval", "--model", model.toString(), "--data", chats.toString(), "--quantize", quantize);
            assertEquals(2, eval.code(), eval.out());
            assertTrue(eval.err().startsWith("mixtune eval: " + expected), eval.err());
        }
        Path recipe = Files.writeString(dir.resolve("r.yaml"), "model:\n  path: " + model + "\ndata:\n  files: ["
                + chats + "]\n  max_seq_len: 64\ntrain:\n  max_steps: 1\noutput_dir: " + dir.resolve("out") + "\n");
        Result train = run("train", "--recipe", recipe.toString());
        assertEquals(2, train.code(), train.out());
        assertTrue(train.err().startsWith("mixtune train: " + expected), train.err());
    }

    /** A generation that would run past max_position_embeddings is refused before it starts, with what fits. */
    @Test
    void generatePastTheModelsPositionsIsRefused(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("tiny");
        assertEquals(0, run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        Result tooLong = run("generate", "--model", model.toString(), "--prompt-ids", "1,415,2936", "--max-new-tokens",
                "4094", "--output-ids");
        assertEquals(2, tooLong.code(), tooLong.err());
        assertEquals(1, tooLong.err().strip().lines().count(), tooLong.err());
        assertTrue(tooLong.err().startsWith("mixtune generate: a prompt of 3 tokens and --max-new-tokens 4094 exceed "
                + "max_position_embeddings 4096 of " + model.resolve("config.json") + ": the model has no position "
                + "beyond it; ask for at most 4093 new tokens"), tooLong.err());
        Result file = run("generate", "--model", model.resolve("config.json").toString(), "--prompt-ids", "1");
        assertEquals(2, file.code(), file.err());
        assertTrue(file.err().contains(": is a file, expected a Hugging Face checkpoint directory"), file.err());
    }

    /**
     * A model or adapter directory that is missing, a file, or lacks its config is an input error (exit 2) worded
     * alike by every command. generate's missing model, chat's adapter, merge-adapter's and init-adapter's inputs
     * exited with 1 before, each in its own words (InputDirectories).
     */
    @Test
    void everyCommandRefusesAMissingModelOrAdapterAlike(@TempDir Path dir) throws Exception {
        Path model = dir.resolve("tiny");
        assertEquals(0, run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        Path absent = dir.resolve("absent");
        Path empty = Files.createDirectories(dir.resolve("empty"));
        String noModel = "--model " + absent + ": no such directory (expected a Hugging Face checkpoint)";
        String noAdapter = "--adapter " + absent + ": no such directory (expected a PEFT adapter)";
        String emptyAdapter = "--adapter " + empty + ": no PEFT adapter there (adapter_config.json missing)";
        Map<List<String>, String> cases = new LinkedHashMap<>();
        cases.put(List.of("generate", "--model", absent.toString(), "--prompt-ids", "1"), noModel);
        cases.put(List.of("generate", "--model", model.toString(), "--adapter", empty.toString(), "--prompt-ids", "1"),
                emptyAdapter);
        cases.put(List.of("chat", "--model", absent.toString()), noModel);
        cases.put(List.of("chat", "--model", model.toString(), "--adapter", absent.toString()), noAdapter);
        cases.put(List.of("eval", "--model", model.toString(), "--adapter", empty.toString(), "--data",
                "../data/samples/chats.jsonl"), emptyAdapter);
        cases.put(List.of("merge-adapter", "--model", absent.toString(), "--adapter", empty.toString(), "--out",
                dir.resolve("merged").toString()), noModel);
        cases.put(List.of("merge-adapter", "--model", model.toString(), "--adapter", empty.toString(), "--out",
                dir.resolve("merged").toString()), emptyAdapter);
        cases.put(List.of("init-adapter", "--model", empty.toString(), "--out", dir.resolve("adapter").toString()),
                "--model " + empty + ": no Hugging Face checkpoint there (config.json missing)");
        cases.put(List.of("reward", "--model", model.toString(), "--adapter", absent.toString(), "--data",
                "../data/samples/preferences.jsonl"), noAdapter);
        for (Map.Entry<List<String>, String> c : cases.entrySet()) {
            Result result = run(c.getKey().toArray(String[]::new));
            assertEquals(2, result.code(), c.getKey() + ": " + result.err());
            assertTrue(result.err().startsWith("mixtune " + c.getKey().get(0) + ": " + c.getValue()),
                    c.getKey() + ": " + result.err());
        }
        assertFalse(Files.exists(dir.resolve("merged")) || Files.exists(dir.resolve("adapter")), "nothing written");
    }

    @Test
    void adapterCommandsRoundTrip(@TempDir Path dir) {
        Path model = dir.resolve("tiny");
        assertEquals(0, run("init-model", "--preset", "tiny-mixtral", "--out", model.toString(), "--dtype", "fp32").code());
        Path adapter = dir.resolve("adapter");
        Result init = run("init-adapter", "--model", model.toString(), "--out", adapter.toString(), "--r", "4",
                "--init", "random", "--seed", "2");
        assertEquals(0, init.code(), init.err());
        assertTrue(init.out().contains("on 32 layers (k_proj,o_proj,q_proj,v_proj,w1,w2,w3)"), init.out());
        assertEquals(2, run("init-adapter", "--model", model.toString(), "--out", dir.resolve("x").toString(),
                "--targets", "qproj").code(), "an unknown target is a usage error");

        String prompt = "1,415,2936,9060,285";
        Result base = run("generate", "--model", model.toString(), "--prompt-ids", prompt, "--max-new-tokens", "6",
                "--output-ids", "--dump-logits", dir.resolve("base.safetensors").toString());
        Result adapted = run("generate", "--model", model.toString(), "--adapter", adapter.toString(), "--prompt-ids",
                prompt, "--max-new-tokens", "6", "--output-ids", "--dump-logits", dir.resolve("adapted.safetensors").toString());
        assertEquals(0, adapted.code(), adapted.err());
        Path merged = dir.resolve("merged");
        Result merge = run("merge-adapter", "--model", model.toString(), "--adapter", adapter.toString(), "--out",
                merged.toString());
        assertEquals(0, merge.code(), merge.err());
        Result fromMerged = run("generate", "--model", merged.toString(), "--prompt-ids", prompt, "--max-new-tokens", "6",
                "--output-ids", "--dump-logits", dir.resolve("merged.safetensors").toString());
        assertEquals(adapted.lastLine(), fromMerged.lastLine());
        float[] adaptedLogits = read(dir.resolve("adapted.safetensors"));
        float[] mergedLogits = read(dir.resolve("merged.safetensors"));
        float[] baseLogits = read(dir.resolve("base.safetensors"));
        double merging = 0;
        double adapting = 0;
        for (int i = 0; i < adaptedLogits.length; i++) {
            merging = Math.max(merging, Math.abs(adaptedLogits[i] - mergedLogits[i]));
            adapting = Math.max(adapting, Math.abs(adaptedLogits[i] - baseLogits[i]));
        }
        assertTrue(merging < 1e-5, "merged differs from base + adapter by " + merging);
        assertTrue(adapting > 1e-3, "the random adapter should change the logits");

        Result quantized = run("generate", "--model", model.toString(), "--adapter", adapter.toString(), "--quantize",
                "nf4", "--prompt-ids", prompt, "--max-new-tokens", "3", "--output-ids");
        assertEquals(0, quantized.code(), quantized.err());
        assertEquals(2, run("generate", "--model", model.toString(), "--quantize", "int3", "--prompt-ids", "1").code());
    }

    @Test
    void mergeCommand(@TempDir Path dir) throws Exception {
        Path golden = Path.of("../merging/src/test/resources/golden/checkpoints").toAbsolutePath().normalize();
        String inputs = golden.resolve("m0") + "," + golden.resolve("m1") + "," + golden.resolve("m2");
        Path out = dir.resolve("ties");
        Result ties = run("merge", "--method", "ties", "--base", golden.resolve("base").toString(), "--inputs", inputs,
                "--weights", "1,0.8,0.6", "--density", "0.5", "--out", out.toString());
        assertEquals(0, ties.code(), ties.err());
        assertTrue(ties.out().startsWith("merged 3 checkpoints with ties (base " + golden.resolve("base") + ") into " + out
                + ": 7 tensors"), ties.out());
        assertTrue(Files.isRegularFile(out.resolve("model.safetensors")) && Files.isRegularFile(out.resolve("config.json")));
        assertEquals(2, run("merge", "--method", "linear", "--inputs", inputs, "--out", out.toString()).code(),
                "an existing output is not replaced without --force: the user's to fix");
        assertEquals(0, run("merge", "--method", "linear", "--inputs", inputs, "--out", out.toString(), "--force").code());

        Result typo = run("merge", "--method", "tie", "--inputs", inputs, "--out", dir.resolve("x").toString());
        assertEquals(2, typo.code());
        assertTrue(typo.err().contains("unknown merge method 'tie' (did you mean 'ties'?)"), typo.err());
        Result weights = run("merge", "--method", "linear", "--inputs", inputs, "--weights", "1,2",
                "--out", dir.resolve("x").toString());
        assertEquals(2, weights.code());
        assertTrue(weights.err().contains("weights has 2 values for 3 models"), weights.err());
        Result density = run("merge", "--method", "ties", "--base", golden.resolve("base").toString(), "--inputs", inputs,
                "--density", "1.5", "--out", dir.resolve("x").toString());
        assertEquals(2, density.code());
        assertTrue(density.err().contains("density must lie in (0, 1]"), density.err());
        Result missing = run("merge", "--method", "linear", "--inputs", golden.resolve("m0") + ",/nonexistent",
                "--out", dir.resolve("x").toString());
        assertEquals(2, missing.code(), "an input that is not there is the user's to fix");
        assertTrue(missing.err().contains("/nonexistent: no such directory"), missing.err());
        assertFalse(Files.exists(dir.resolve("x")));

        Path yaml = Files.writeString(dir.resolve("merge.yaml"), "merge_method: ema\nmodels:\n  - model: "
                + golden.resolve("m0") + "\n  - model: " + golden.resolve("m1") + "\nparameters:\n  decay: 0.9\n"
                + "  deacy: 0.8\nout: " + dir.resolve("ema") + "\n");
        Result badKey = run("merge", "--config", yaml.toString());
        assertEquals(2, badKey.code());
        assertTrue(badKey.err().contains(yaml + ":7:3: unknown key 'deacy' in parameters (did you mean 'decay'?)"),
                badKey.err());
        Files.writeString(yaml, Files.readString(yaml).replace("  deacy: 0.8\n", ""));
        Result ema = run("merge", "--config", yaml.toString());
        assertEquals(0, ema.code(), ema.err());
        assertTrue(ema.out().contains("weights: 0.9 " + golden.resolve("m0") + ", 0.1 " + golden.resolve("m1")), ema.out());
        assertEquals(2, run("merge", "--config", yaml.toString(), "--method", "linear").code());
    }

    private static float[] read(Path file) {
        try (SafetensorsReader reader = SafetensorsReader.open(file)) {
            return reader.readFloats("logits");
        }
    }
}
