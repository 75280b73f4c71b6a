package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.trainer.cli.MixtuneCliTest.Result;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class DataCommandTest {
    @TempDir
    Path dir;

    static final String CUSTOM = """
              template: custom
              custom_template:
                user_prefix: "User: "
                user_suffix: "\\n"
                assistant_prefix: "Bot:\\n"
                after_assistant: "\\n"
                bos: true
                eos_after_assistant: true
            """;

    Path recipe(String dataKeys) throws IOException {
        Path chats = dir.resolve("chats.jsonl");
        Files.writeString(chats, """
                {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
                {"messages": [{"role": "user", "content": "Two?"}, {"role": "assistant", "content": "2"}, \
                {"role": "user", "content": "Three?"}, {"role": "assistant", "content": "3"}]}
                """);
        return Files.writeString(dir.resolve("recipe.yaml"), "model:\n  preset: tiny-mistral\n"
                + "data:\n  files: [" + chats + "]\n  max_seq_len: 64\n" + dataKeys
                + "train:\n  seed: 1\noutput_dir: " + dir.resolve("out") + "\n");
    }

    Result data(String... args) {
        List<String> all = new ArrayList<>(List.of("data"));
        all.addAll(List.of(args));
        return MixtuneCliTest.run(all.toArray(String[]::new));
    }

    @Test
    void prepareTokenizesOnceThenReadsTheCache() throws IOException {
        Path recipe = recipe("");
        Result first = data("prepare", "--recipe", recipe.toString());
        assertEquals(0, first.code(), first.err());
        assertTrue(first.out().contains("data cache: " + dir.resolve("out").resolve("data-cache") + "/"), first.out());
        assertTrue(first.out().contains(": built (tokenized and written)"), first.out());
        assertTrue(first.out().contains("train: 2 samples, validation: 0 samples"), first.out());
        assertTrue(first.out().contains("tokenizer: configs/tokenizer/mistral-v1/tokenizer.json (bundled) (bos 1, eos 2)"),
                first.out());
        Result second = data("prepare", "--recipe", recipe.toString());
        assertTrue(second.out().contains(": hit (nothing tokenized)"), second.out());
        assertTrue(data("prepare", "--recipe", recipe.toString(), "--set", "data.max_seq_len=65").out()
                .contains(": built"), "another max_seq_len, another cache file");
        Result elsewhere = data("prepare", "--recipe", recipe.toString(), "--cache-dir", dir.resolve("c").toString());
        assertTrue(elsewhere.out().contains("data cache: " + dir.resolve("c") + "/"), elsewhere.out());
    }

    @Test
    void previewMarksTrainedTokensAndDumpsIdsLabelsPositions() throws IOException {
        Path recipe = recipe(CUSTOM); // packing: true, the default
        Path dump = dir.resolve("dump.jsonl");
        Result plain = data("preview", "--recipe", recipe.toString(), "--n", "5", "--color", "never", "--dump",
                dump.toString());
        assertEquals(0, plain.code(), plain.err());
        String out = plain.out();
        assertTrue(out.contains("--- sample 1 of 2 (" + dir.resolve("chats.jsonl") + ":1): 12 tokens, 3 trained\n"
                + "<s>User: Hi\nBot:\n⟦Hello!</s>⟧\n\n"), out);
        assertTrue(out.contains("<s>User: Two?\nBot:\n⟦2</s>⟧\nUser: Three?\nBot:\n⟦3</s>⟧\n\n"), out);
        assertTrue(out.contains("packing: 2 samples in 1 rows of 64 tokens"), out);
        assertTrue(out.contains("wrote 2 samples and their packed rows (positions restart at each sequence, whose first "
                + "token is untrained) to " + dump), out);

        Result colour = data("preview", "--recipe", recipe.toString(), "--n", "1", "--color", "always");
        assertTrue(colour.out().contains("\u001B[2m<s>\u001B[0mUser: Hi\nBot:\n\u001B[1;32mHello!</s>\u001B[0m\n"), colour.out());

        ObjectMapper json = new ObjectMapper();
        List<JsonNode> rows = Files.readAllLines(dump).stream().map(line -> {
            try {
                return json.readTree(line);
            } catch (IOException e) {
                throw new AssertionError(e);
            }
        }).toList();
        assertEquals(3, rows.size(), "two samples, one packed row");
        JsonNode first = rows.get(0);
        assertEquals("[1,1247,28747,15359,13,25288,28747,13,16230,28808,2,13]", first.get("input_ids").toString());
        assertEquals("[-100,-100,-100,-100,-100,-100,-100,-100,16230,28808,2,-100]", first.get("labels").toString());
        assertEquals("[0,1,2,3,4,5,6,7,8,9,10,11]", first.get("position_ids").toString());
        JsonNode packed = rows.get(2);
        assertEquals(0, packed.get("packed_row").asInt());
        assertEquals(64, packed.get("input_ids").size());
        int second = rows.get(1).get("input_ids").size();
        // Longest first: the two-turn sample, then the first, positions restarting, padding -1.
        assertEquals(1, packed.get("sample_ids").get(second).asInt());
        assertEquals(0, packed.get("position_ids").get(second).asInt());
        assertEquals(-100, packed.get("labels").get(second).asInt(), "a sample's first token predicts nothing");
        assertEquals(-1, packed.get("sample_ids").get(second + 12).asInt());
    }

    /** A --dump onto the recipe or its data would replace the input with the dump (it did): refused, nothing written. */
    @Test
    void previewNeverDumpsOverItsRecipeOrData() throws IOException {
        Path recipe = recipe("");
        Path chats = dir.resolve("chats.jsonl");
        for (Path input : List.of(chats, recipe)) {
            byte[] before = Files.readAllBytes(input);
            Result preview = data("preview", "--recipe", recipe.toString(), "--n", "1", "--color", "never", "--dump",
                    input.toString());
            assertEquals(2, preview.code(), preview.out() + preview.err());
            assertTrue(preview.err().contains("--dump " + input + " is an input of the recipe"), preview.err());
            assertArrayEquals(before, Files.readAllBytes(input));
        }
        assertFalse(Files.exists(dir.resolve("out")), "nothing written");
    }

    /**
     * Every input the recipe names is guarded, not only its data: a --dump into model.adapter (which the old list of
     * inputs left out) overwrote the adapter's adapter_config.json. Refused, the adapter untouched.
     */
    @Test
    void previewNeverDumpsIntoTheRecipesAdapter() throws IOException {
        Path adapter = Files.createDirectories(dir.resolve("adapter-in"));
        Path adapterConfig = Files.writeString(adapter.resolve("adapter_config.json"), "{\"peft_type\": \"LORA\", "
                + "\"r\": 8, \"lora_alpha\": 16, \"target_modules\": [\"q_proj\", \"v_proj\"]}");
        Path recipe = recipe("");
        byte[] before = Files.readAllBytes(adapterConfig);
        Result preview = data("preview", "--recipe", recipe.toString(), "--set", "model.adapter=" + adapter, "--n", "1",
                "--color", "never", "--dump", adapterConfig.toString());
        assertEquals(2, preview.code(), preview.out() + preview.err());
        assertTrue(preview.err().contains("--dump " + adapterConfig + " is inside an input of the recipe (model.adapter "
                + adapter + ")"), preview.err());
        assertArrayEquals(before, Files.readAllBytes(adapterConfig));
    }

    @Test
    void previewNeedsNoOutputDir() throws IOException {
        String withOutputDir = Files.readString(recipe(""));
        Path recipe = Files.writeString(dir.resolve("no-output.yaml"),
                withOutputDir.replace("output_dir: " + dir.resolve("out") + "\n", ""));
        assertFalse(Files.readString(recipe).contains("output_dir"));
        Result preview = data("preview", "--recipe", recipe.toString(), "--n", "1", "--color", "never", "--cache-dir",
                dir.resolve("cache").toString());
        assertEquals(0, preview.code(), preview.err());
        assertTrue(preview.out().contains("--- sample 1 of 2"), preview.out());
    }

    @Test
    void recipeErrorsNameTheLine() throws IOException {
        Path recipe = recipe("  max_seq: 12\n");
        Result unknown = data("prepare", "--recipe", recipe.toString());
        assertEquals(2, unknown.code());
        assertTrue(unknown.err().startsWith("mixtune data prepare: " + recipe + ":6: data.max_seq: unknown key"),
                unknown.err());
        Files.writeString(recipe, Files.readString(recipe).replace("max_seq: 12", "loss_on: everything"));
        Result bad = data("prepare", "--recipe", recipe.toString());
        assertTrue(bad.err().startsWith("mixtune data prepare: " + recipe + ":6: data.loss_on: "), bad.err());
        Result custom = data("preview", "--recipe", recipe(CUSTOM.replace("    bos: true\n", "")).toString());
        assertTrue(custom.err().contains(": data.custom_template.bos: missing: expected true or false"), custom.err());
        Result missing = data("preview", "--recipe", dir.resolve("absent.yaml").toString());
        assertEquals(2, missing.code());
        assertTrue(missing.err().contains("absent.yaml: no such recipe file"), missing.err());
    }

    @Test
    void subcommandUsage() {
        assertEquals(2, MixtuneCliTest.run("data").code());
        Result unknown = MixtuneCliTest.run("data", "frob");
        assertEquals(2, unknown.code());
        assertTrue(unknown.err().contains("unknown subcommand 'frob': expected one of [prepare, preview]"), unknown.err());
        assertEquals(0, MixtuneCliTest.run("data", "--help").code());
        Result help = MixtuneCliTest.run("data", "preview", "--help");
        assertEquals(0, help.code());
        assertTrue(help.out().contains("--dump"), help.out());
        assertEquals(2, MixtuneCliTest.run("data", "prepare").code(), "--recipe is required");
        assertTrue(MixtuneCliTest.run("--help").out().contains("data prepare"));
    }

    /** ChatML's markers on the preset's Mistral tokenizer: one warning with the piece counts. */
    @Test
    void chatMlOnAMistralTokenizerIsWarnedOnceWithThePieceCounts() throws IOException {
        Result prepare = data("prepare", "--recipe", recipe("  template: chatml\n").toString());
        assertEquals(0, prepare.code(), prepare.err());
        String warning = "warning: chat template chatml: 2 of its 2 markers are not special tokens of the tokenizer "
                + "and become several text pieces (<|im_end|> 7 pieces, <|im_start|> 7 pieces)";
        assertTrue(prepare.out().contains(warning), prepare.out());
        assertEquals(prepare.out().indexOf(warning), prepare.out().lastIndexOf(warning), "once");
        assertFalse(data("prepare", "--recipe", recipe("").toString()).out().contains("warning"));
    }

    /** template: hf needs the model's chat_template; auto takes it where the model has one (here Zephyr's). */
    @Test
    void hfNeedsTheModelsTemplateAndAutoUsesIt() throws IOException {
        Result hf = data("prepare", "--recipe", recipe("  template: hf\n").toString());
        assertEquals(2, hf.code(), hf.out());
        assertTrue(hf.err().contains("data.template: hf uses the model's own chat_template, but "
                + "configs/tokenizer/mistral-v1/tokenizer_config.json (bundled) has none"), hf.err());

        Path model = dir.resolve("model");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mistral", "--out", model.toString()).code());
        Path config = model.resolve("tokenizer_config.json");
        ObjectNode json = (ObjectNode) new ObjectMapper().readTree(config.toFile());
        json.put("chat_template", "{% for message in messages %}\n{% if message['role'] == 'user' %}\n"
                + "{{ '<|user|>\n' + message['content'] + eos_token }}\n{% elif message['role'] == 'assistant' %}\n"
                + "{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif %}\n{% endfor %}");
        new ObjectMapper().writeValue(config.toFile(), json);
        Path recipe = Files.writeString(dir.resolve("zephyr.yaml"), Files.readString(recipe(""))
                .replace("  preset: tiny-mistral\n", "  path: " + model + "\n"));
        Result preview = data("preview", "--recipe", recipe.toString(), "--n", "1", "--color", "never");
        assertEquals(0, preview.code(), preview.err());
        // "\n" after </s> is encoded as a new piece ("▁\n", shown " \n"), as transformers does after a special token
        assertTrue(preview.out().contains("<|user|>\nHi</s> \n<|assistant|>\n⟦Hello!</s>⟧"), preview.out());
        Result prepare = data("prepare", "--recipe", recipe.toString());
        assertTrue(prepare.out().contains("template auto (hf)"), prepare.out());
        assertTrue(prepare.out().contains("warning: chat template " + config), prepare.out());
    }

    /**
     * A DPO or KTO recipe's data are pairs or unpaired examples, which train tokenizes itself: data prepare and preview
     * refuse them as an input error (exit 2, at the train.method line), where they exited 1 before.
     */
    @Test
    void previewOfAKtoRecipeIsAnInputError() throws IOException {
        Path data = Files.writeString(dir.resolve("k.jsonl"),
                "{\"prompt\": \"a\", \"completion\": \"b\", \"label\": true}\n");
        Path recipe = Files.writeString(dir.resolve("k.yaml"), """
                model:
                  preset: tiny-mistral
                data:
                  files: [%s]
                train:
                  method: kto
                  micro_batch_size: 2
                output_dir: %s
                """.formatted(data, dir.resolve("out")));
        Result preview = MixtuneCliTest.run("data", "preview", "--recipe", recipe.toString());
        assertEquals(2, preview.code(), preview.err());
        assertTrue(preview.err().contains("k.yaml:6: train.method: the recipe trains kto: its data.files hold "
                + "unpaired examples"), preview.err());
    }
}
