package io.mixtune.data.dataset;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.template.CustomTemplateConfig;
import io.mixtune.data.dataset.SampleCache.Loaded;
import io.mixtune.data.dataset.SampleCache.Status;
import io.mixtune.data.dataset.SampleCache.TokenizerFile;
import io.mixtune.data.template.MistralTemplate;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.UnaryOperator;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SampleCacheTest {
    static final TokenizerFile TOKENIZER = TokenizerFile.resource(ModelPreset.MISTRAL_V1_TOKENIZER, 1, 2);
    static final CustomTemplateConfig PLAIN = new CustomTemplateConfig("", "\n", "User: ", "\n", "Bot:\n", "", "\n",
            true, true);

    @TempDir
    Path dir;
    Path train;
    Path validation;
    int tokenizations;
    SampleCache cache;

    @BeforeEach
    void files() throws IOException {
        List<String> lines = new ArrayList<>();
        for (int i = 0; i < 30; i++) {
            lines.add(ChatDatasetTest.chat("Question " + i + "?", "Answer " + i + "."));
        }
        lines.add("not json");
        train = Files.write(dir.resolve("train.jsonl"), lines);
        validation = Files.write(dir.resolve("validation.jsonl"), lines.subList(0, 5));
        cache = new SampleCache(dir.resolve("cache"), (config, tokenizer, seed) -> {
            tokenizations++;
            return SampleCache.tokenize(config, tokenizer, seed);
        });
    }

    DataConfig config() {
        return new DataConfig(List.of(train.toString()), null, 0.2, "auto", "mistral", null, 64, false,
                "all_assistant_turns", true);
    }

    static void assertSameDataset(ChatDataset expected, ChatDataset actual) {
        assertEquals(expected.report().toString(), actual.report().toString());
        assertEquals(expected.report().records(), actual.report().records());
        for (List<List<TokenizedSample>> pair : List.of(List.of(expected.train(), actual.train()),
                List.of(expected.validation(), actual.validation()))) {
            assertEquals(pair.get(0).size(), pair.get(1).size());
            for (int i = 0; i < pair.get(0).size(); i++) {
                assertArrayEquals(pair.get(0).get(i).inputIds(), pair.get(1).get(i).inputIds());
                assertArrayEquals(pair.get(0).get(i).labels(), pair.get(1).get(i).labels());
                assertEquals(pair.get(0).get(i).source(), pair.get(1).get(i).source());
            }
        }
    }

    @Test
    void sameInputsReadTheCacheWithoutTokenizing() throws IOException {
        Loaded built = cache.load(config(), TOKENIZER, 7);
        assertEquals(Status.BUILT, built.status());
        assertEquals(1, tokenizations);
        assertEquals(24, built.dataset().train().size());
        assertEquals(6, built.dataset().validation().size());
        assertEquals(Map.of("malformed JSON", 1L), built.dataset().report().skipped());
        Loaded hit = cache.load(config(), TOKENIZER, 7);
        assertEquals(Status.HIT, hit.status());
        assertNull(hit.note());
        assertEquals(1, tokenizations, "a hit tokenizes nothing");
        assertEquals(built.file(), hit.file());
        assertSameDataset(built.dataset(), hit.dataset());
        assertSameDataset(SampleCache.tokenize(config(), TOKENIZER, 7), hit.dataset());
        try (Stream<Path> files = Files.list(dir.resolve("cache"))) {
            assertEquals(List.of(built.file()), files.toList(), "one file, no temporary left behind");
        }
    }

    @Test
    void changingAnyKeyComponentRebuilds() throws IOException {
        DataConfig base = config();
        Map<String, UnaryOperator<DataConfig>> changes = new LinkedHashMap<>();
        changes.put("max_seq_len", c -> with(c, "max_seq_len", 65));
        changes.put("packing", c -> with(c, "packing", true));
        changes.put("packing_strategy bfd_split", c -> with(with(c, "packing", true), "packing_strategy",
                "bfd_split"));
        changes.put("packing_strategy wrapped", c -> with(with(c, "packing", true), "packing_strategy", "wrapped"));
        changes.put("loss_on", c -> with(c, "loss_on", "last_turn"));
        changes.put("template", c -> with(c, "template", "chatml"));
        changes.put("custom", c -> with(c, "custom", PLAIN));
        changes.put("custom string", c -> with(c, "custom", new CustomTemplateConfig("", "\n", "User: ", "\n",
                "Bot: \n", "", "\n", true, true)));
        changes.put("custom eos", c -> with(c, "custom", new CustomTemplateConfig("", "\n", "User: ", "\n", "Bot:\n",
                "", "\n", true, false)));
        changes.put("format", c -> with(c, "format", "messages"));
        changes.put("skip_invalid", c -> with(c, "skip_invalid", false));
        changes.put("dataset_text_field", c -> with(c, "dataset_text_field", "body"));
        changes.put("validation_ratio", c -> with(c, "validation_ratio", 0.1));
        changes.put("validation_files", c -> with(c, "validation_files", List.of(validation.toString())));
        changes.put("files", c -> with(c, "files", List.of(train.toString(), validation.toString())));
        List<String> keys = new ArrayList<>();
        keys.add(key(base, TOKENIZER, 7));
        for (Map.Entry<String, UnaryOperator<DataConfig>> change : changes.entrySet()) {
            keys.add(key(change.getValue().apply(base), TOKENIZER, 7));
            assertEquals(keys.size(), keys.stream().distinct().count(), change.getKey() + " changes the key");
        }
        keys.add(key(base, TOKENIZER, 8));
        byte[] json = Arrays.copyOf(TOKENIZER.json(), TOKENIZER.json().length + 1);
        json[json.length - 1] = '\n';
        keys.add(key(base, new TokenizerFile("edited", json, 1, 2), 7));
        keys.add(key(base, new TokenizerFile(TOKENIZER.name(), TOKENIZER.json(), 1, 3), 7));
        assertEquals(keys.size(), keys.stream().distinct().count(), "seed, tokenizer bytes and special ids");
        assertEquals(keys.get(0), key(config(), new TokenizerFile("another name", TOKENIZER.json(), 1, 2), 7),
                "the tokenizer's bytes count, not where they came from");
        assertEquals(keys.get(0), key(with(base, "dataset_text_field", "text"), TOKENIZER, 7),
                "TRL's default text field keeps the keys of recipes written before it");
        assertEquals(keys.get(2), key(with(with(base, "packing", true), "packing_strategy", "bfd"), TOKENIZER, 7),
                "TRL's default packing strategy keeps the keys of recipes written before it");

        assertEquals(Status.BUILT, cache.load(base, TOKENIZER, 7).status());
        assertEquals(Status.BUILT, cache.load(with(base, "max_seq_len", 65), TOKENIZER, 7).status());
        // Same path, same size, other bytes: the content hash sees it.
        String text = Files.readString(train).replace("Answer 3.", "Answer 4.");
        Files.writeString(train, text);
        Loaded edited = cache.load(base, TOKENIZER, 7);
        assertEquals(Status.BUILT, edited.status());
        assertEquals(3, tokenizations);
        assertEquals(Status.HIT, cache.load(base, TOKENIZER, 7).status());
        assertEquals(3, tokenizations);
    }

    /**
     * A tokenizer without BOS tokenizes other ids, so its caches are others: config.json's bos_token_id null (the
     * tokenizer's BOS id {@link TextTokenizer#NO_BOS}), and tokenizer_config.json's bos_token null for template auto
     * and hf (the chat template sees none), which left the key equal (auto on the built-in's Jinja) or threw (hf).
     */
    @Test
    void aTokenizerWithoutBosHasItsOwnKey() throws IOException {
        DataConfig mistral = config();
        assertNotEquals(key(mistral, TOKENIZER, 7), key(mistral, new TokenizerFile(TOKENIZER.name(), TOKENIZER.json(),
                TextTokenizer.NO_BOS, 2), 7), "bos_token_id null");
        for (String template : List.of("auto", "hf")) {
            DataConfig data = with(mistral, "template", template);
            List<String> keys = new ArrayList<>();
            for (String bosToken : List.of("\"<s>\"", "null")) {
                byte[] tokenizerConfig = ("{\"bos_token\": " + bosToken + ", \"eos_token\": \"</s>\", \"chat_template\": "
                        + new ObjectMapper().writeValueAsString(MistralTemplate.JINJA) + "}")
                        .getBytes(StandardCharsets.UTF_8);
                keys.add(key(data, new TokenizerFile(TOKENIZER.name(), TOKENIZER.json(), 1, 2, "tokenizer_config.json",
                        tokenizerConfig), 7));
            }
            assertNotEquals(keys.get(0), keys.get(1), template + ": tokenizer_config.json's bos_token null");
        }
    }

    static String key(DataConfig config, TokenizerFile tokenizer, long seed) {
        return SampleCache.key(config, tokenizer, seed);
    }

    static DataConfig with(DataConfig c, String key, Object value) {
        return new DataConfig(
                key.equals("files") ? cast(value) : c.files(),
                key.equals("validation_files") ? cast(value) : c.validationFiles(),
                key.equals("validation_ratio") ? (double) value : c.validationRatio(),
                key.equals("format") ? (String) value : c.format(),
                key.equals("template") ? (String) value : key.equals("custom") ? "custom" : c.template(),
                key.equals("custom") ? (CustomTemplateConfig) value : c.customTemplate(),
                key.equals("max_seq_len") ? (int) value : c.maxSeqLen(),
                key.equals("packing") ? (boolean) value : c.packing(),
                key.equals("loss_on") ? (String) value : c.lossOn(),
                key.equals("skip_invalid") ? (boolean) value : c.skipInvalid(),
                key.equals("dataset_text_field") ? (String) value : c.datasetTextField(),
                key.equals("packing_strategy") ? (String) value : c.packingStrategy());
    }

    @SuppressWarnings("unchecked")
    static List<String> cast(Object value) {
        return (List<String>) value;
    }

    @Test
    void aDamagedFileIsRebuiltWithAMessage() throws IOException {
        Loaded built = cache.load(config(), TOKENIZER, 7);
        byte[] bytes = Files.readAllBytes(built.file());

        byte[] flipped = bytes.clone();
        flipped[bytes.length / 2] ^= 0x10;
        Files.write(built.file(), flipped);
        Loaded afterFlip = cache.load(config(), TOKENIZER, 7);
        assertEquals(Status.REBUILT, afterFlip.status());
        assertEquals("data cache " + built.file() + " is damaged (checksum mismatch): rebuilding it", afterFlip.note());
        assertArrayEquals(bytes, Files.readAllBytes(built.file()), "the rebuilt file is the original");

        Files.write(built.file(), Arrays.copyOf(bytes, bytes.length - 100));
        Loaded afterCut = cache.load(config(), TOKENIZER, 7);
        assertEquals(Status.REBUILT, afterCut.status());
        assertTrue(afterCut.note().contains("(truncated)"), afterCut.note());

        Files.write(built.file(), "not a cache".getBytes(StandardCharsets.UTF_8));
        assertTrue(cache.load(config(), TOKENIZER, 7).note().contains("(not a mixtune data cache)"));

        byte[] badLength = bytes.clone();
        int firstSample = 8 + 4 + 32 + 6 * 8 + 4 + (4 + "malformed JSON".length() + 8) + 8;
        badLength[firstSample] = (byte) 0x7f; // a length of ~2^31
        Files.write(built.file(), badLength);
        Loaded afterLength = cache.load(config(), TOKENIZER, 7);
        assertEquals(Status.REBUILT, afterLength.status(), afterLength.note());

        assertEquals(5, tokenizations);
        assertEquals(Status.HIT, cache.load(config(), TOKENIZER, 7).status());
        assertSameDataset(built.dataset(), cache.load(config(), TOKENIZER, 7).dataset());
    }
}
