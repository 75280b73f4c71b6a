package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.generate.ProxyTuning;
import io.mixtune.model.safetensors.SafetensorsReader;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `generate` and `eval` with --proxy-base/--proxy-tuned/--proxy-adapter: logits = large + alpha (tuned - base), checked
 * against the three models run alone; and the refusals (another vocabulary, another tokenizer, an adapter for another
 * base). The parity with transformers is interop/tests/test_proxy_tuning.py.
 */
class ProxyTuningCliTest {
    private static final String PROMPT = "1,5,9,300,17,42,255,3,77,128,64,500,11,23";

    @TempDir
    static Path dir;
    static Path large;
    static Path small;
    static Path tuned;
    static Path adapter;
    static Path chats;

    @BeforeAll
    static void models() throws IOException {
        large = dir.resolve("large");
        small = dir.resolve("small");
        tuned = dir.resolve("tuned");
        adapter = dir.resolve("adapter");
        ok(MixtuneCliTest.run("init-model", "--preset", "tiny-mixtral", "--seed", "11", "--dtype", "fp32", "--out",
                large.toString()));
        ok(MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--seed", "12", "--dtype", "fp32", "--out",
                small.toString()));
        ok(MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--seed", "13", "--dtype", "fp32", "--out",
                tuned.toString()));
        ok(MixtuneCliTest.run("init-adapter", "--model", small.toString(), "--out", adapter.toString(), "--r", "4",
                "--alpha", "8", "--targets", "all-linear", "--init", "random", "--seed", "3"));
        chats = dir.resolve("chats.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/chats.jsonl"))) {
            Files.write(chats, lines.limit(3).toList());
        }
    }

    private static MixtuneCliTest.Result ok(MixtuneCliTest.Result result) {
        assertEquals(0, result.code(), result.out() + result.err());
        return result;
    }

    /** Greedy generation with the prompt's logits dumped: the new ids and the logits [prompt_len][vocab]. */
    private record Generated(String ids, float[] logits) {}

    private static Generated generate(String name, String... options) {
        Path dump = dir.resolve(name + ".safetensors");
        List<String> args = new ArrayList<>(List.of("generate", "--prompt-ids", PROMPT, "--max-new-tokens", "8",
                "--greedy", "--output-ids", "--dump-logits", dump.toString()));
        args.addAll(List.of(options));
        MixtuneCliTest.Result result = ok(MixtuneCliTest.run(args.toArray(String[]::new)));
        try (SafetensorsReader reader = SafetensorsReader.open(dump)) {
            return new Generated(result.lastLine().trim(), reader.readFloats("logits"));
        }
    }

    @Test
    void alphaZeroIsTheLargeModelAlone() {
        Generated alone = generate("large", "--model", large.toString());
        Generated proxied = generate("alpha0", "--model", large.toString(), "--proxy-base", small.toString(),
                "--proxy-tuned", tuned.toString(), "--proxy-alpha", "0");
        assertArrayEquals(alone.logits(), proxied.logits());
        assertEquals(alone.ids(), proxied.ids());
    }

    @Test
    void aLargeModelEqualToTheSmallBaseGivesTheTunedModelExactly() {
        Generated tunedAlone = generate("tuned", "--model", tuned.toString());
        Generated proxied = generate("same", "--model", small.toString(), "--proxy-base", small.toString(),
                "--proxy-tuned", tuned.toString());
        assertArrayEquals(tunedAlone.logits(), proxied.logits());
        assertEquals(tunedAlone.ids(), proxied.ids());
    }

    /** The combined logits are large + alpha (tuned - base) of the three models' own logits; an adapter is a model. */
    @Test
    void theLogitsAreTheLargeOnesPlusAlphaTimesWhatTuningChanged() {
        Generated l = generate("l", "--model", large.toString());
        Generated b = generate("b", "--model", small.toString());
        Generated t = generate("t", "--model", tuned.toString());
        Generated a = generate("a", "--model", small.toString(), "--adapter", adapter.toString());
        Generated proxied = generate("p", "--model", large.toString(), "--proxy-base", small.toString(),
                "--proxy-tuned", tuned.toString(), "--proxy-alpha", "0.7");
        assertArrayEquals(ProxyTuning.combine(l.logits(), b.logits(), t.logits(), 0.7), proxied.logits());
        assertNotEquals(l.ids(), proxied.ids(), "the small models must steer the large one in this case");
        Generated viaAdapter = generate("pa", "--model", large.toString(), "--proxy-base", small.toString(),
                "--proxy-adapter", adapter.toString(), "--proxy-alpha", "1.5", "--proxy-quantize", "none");
        assertArrayEquals(ProxyTuning.combine(l.logits(), b.logits(), a.logits(), 1.5), viaAdapter.logits());
    }

    @Test
    void evalAtAlphaZeroPrintsTheLargeModelsLossAndOnTheSmallBaseTheTunedOnes() {
        EvalCommandTest.Printed alone = eval("--model", large.toString());
        EvalCommandTest.Printed alpha0 = eval("--model", large.toString(), "--proxy-base", small.toString(),
                "--proxy-tuned", tuned.toString(), "--proxy-alpha", "0");
        assertEquals(alone, alpha0);
        EvalCommandTest.Printed adapted = eval("--model", small.toString(), "--adapter", adapter.toString());
        EvalCommandTest.Printed proxied = eval("--model", small.toString(), "--proxy-base", small.toString(),
                "--proxy-adapter", adapter.toString());
        assertEquals(adapted, proxied);
        EvalCommandTest.Printed half = eval("--model", large.toString(), "--proxy-base", small.toString(),
                "--proxy-tuned", tuned.toString(), "--proxy-alpha", "0.5");
        assertEquals(alone.targets(), half.targets());
        assertNotEquals(alone.loss(), half.loss());
    }

    private static EvalCommandTest.Printed eval(String... options) {
        List<String> args = new ArrayList<>(List.of("eval", "--data", chats.toString(), "--max-seq-len", "256"));
        args.addAll(List.of(options));
        return EvalCommandTest.Printed.of(ok(MixtuneCliTest.run(args.toArray(String[]::new))));
    }

    @Test
    void aSmallModelWithAnotherVocabularySizeIsRefused() throws IOException {
        Path other = copyOf(small, "vocab");
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(other.resolve("config.json").toFile());
        config.put("vocab_size", 32064);
        json.writeValue(other.resolve("config.json").toFile(), config);
        MixtuneCliTest.Result result = MixtuneCliTest.run("generate", "--model", large.toString(), "--prompt-ids",
                PROMPT, "--proxy-base", other.toString(), "--proxy-tuned", tuned.toString());
        assertEquals(2, result.code(), result.err());
        assertTrue(result.err().contains("--proxy-base " + other + ": vocab_size 32064 but 32000 in --model"),
                result.err());
    }

    @Test
    void aTokenizerWithOtherIdsIsRefusedWhateverItsFileIsCalled() throws IOException {
        Path other = copyOf(tuned, "tokenizer");
        ObjectMapper json = new ObjectMapper();
        ObjectNode tokenizer = (ObjectNode) json.readTree(other.resolve("tokenizer.json").toFile());
        ObjectNode vocab = (ObjectNode) tokenizer.path("model").path("vocab");
        long a = vocab.get("▁the").asLong();
        long b = vocab.get("▁and").asLong();
        vocab.put("▁the", b);
        vocab.put("▁and", a);
        json.writeValue(other.resolve("tokenizer.json").toFile(), tokenizer);
        MixtuneCliTest.Result result = MixtuneCliTest.run("eval", "--model", large.toString(), "--data",
                chats.toString(), "--proxy-base", small.toString(), "--proxy-tuned", other.toString());
        assertEquals(2, result.code(), result.err());
        assertTrue(result.err().contains("--proxy-tuned " + other + ": its tokenizer differs from --model " + large),
                result.err());
        assertTrue(result.err().contains("token \"▁and\" is id " + b), result.err());
    }

    @Test
    void anAdapterForAnotherBaseIsRefused() {
        MixtuneCliTest.Result result = MixtuneCliTest.run("generate", "--model", small.toString(), "--prompt-ids",
                PROMPT, "--proxy-base", large.toString(), "--proxy-adapter", adapter.toString());
        assertEquals(2, result.code(), result.err());
        assertTrue(result.err().contains("--proxy-adapter " + adapter + ": it does not fit --proxy-base " + large),
                result.err());
    }

    @Test
    void aPartialProxyRequestIsAUsageError() {
        MixtuneCliTest.Result noBase = MixtuneCliTest.run("generate", "--model", large.toString(), "--prompt-ids",
                PROMPT, "--proxy-tuned", tuned.toString());
        assertEquals(2, noBase.code());
        assertTrue(noBase.err().contains("need --proxy-base"), noBase.err());
        MixtuneCliTest.Result both = MixtuneCliTest.run("generate", "--model", large.toString(), "--prompt-ids",
                PROMPT, "--proxy-base", small.toString(), "--proxy-tuned", tuned.toString(), "--proxy-adapter",
                adapter.toString());
        assertEquals(2, both.code());
        assertTrue(both.err().contains("exactly one of --proxy-tuned"), both.err());
    }

    private static Path copyOf(Path model, String name) throws IOException {
        Path copy = dir.resolve(model.getFileName() + "-" + name);
        Files.createDirectories(copy);
        try (Stream<Path> files = Files.list(model)) {
            for (Path file : files.toList()) {
                Files.copy(file, copy.resolve(file.getFileName()));
            }
        }
        return copy;
    }
}
