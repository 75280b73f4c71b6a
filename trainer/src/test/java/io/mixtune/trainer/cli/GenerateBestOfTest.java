package io.mixtune.trainer.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import ai.djl.Device;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.model.checkpoint.MistralCheckpoint;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.trainer.Training;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.run.TrainingData;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * `generate --best-of N --reward RM` on a reward model trained here for 3 steps: every answer's reward is the one
 * RewardScorer gives that chat tokenized independently (the data pipeline's chat file path), the chosen one is the
 * highest, seeded runs repeat and answer i is plain `generate --seed S + i`; wrong inputs stop before any work.
 */
class GenerateBestOfTest {
    private static final String PROMPT = "Name a colour.";
    private static final ObjectMapper JSON = new ObjectMapper();

    @TempDir
    static Path dir;
    static Path base;
    static Path rewardModel;

    @BeforeAll
    static void trainARewardModel() throws Exception {
        Path pairs = dir.resolve("pairs.jsonl");
        try (Stream<String> lines = Files.lines(Path.of("../data/samples/preferences.jsonl"))) {
            Files.write(pairs, lines.limit(12).toList());
        }
        Path out = dir.resolve("out");
        Training.load(Path.of("../recipes/quickstart-reward.yaml"), "data.files=[" + pairs + "]",
                "data.validation_ratio=0", "data.max_seq_len=384", "train.max_steps=3", "output_dir=" + out).run();
        base = out.resolve("base-model");
        rewardModel = out.resolve("adapter");
    }

    private static List<String> bestOf(String... more) {
        List<String> args = new ArrayList<>(List.of("generate", "--model", base.toString(), "--prompt", PROMPT,
                "--chat", "--max-new-tokens", "6", "--best-of", "4", "--reward", rewardModel.toString()));
        args.addAll(List.of(more));
        return args;
    }

    @Test
    void theBestAnswerHasTheHighestRewardAndEveryRewardIsTheScorersOwn() throws Exception {
        Path answers = dir.resolve("answers.jsonl");
        MixtuneCliTest.Result run = MixtuneCliTest.run(bestOf("--temperature", "1.5", "--seed", "11", "--output",
                answers.toString(), "--output-ids").toArray(String[]::new));
        assertEquals(0, run.code(), run.err());
        List<JsonNode> records = new ArrayList<>();
        for (String line : Files.readAllLines(answers)) {
            records.add(JSON.readTree(line));
        }
        assertEquals(4, records.size());
        int best = -1;
        double max = Double.NEGATIVE_INFINITY;
        for (int i = 0; i < 4; i++) {
            JsonNode record = records.get(i);
            assertEquals(i + 1, record.get("answer").asInt());
            assertEquals(11 + i, record.get("seed").asInt());
            if (record.get("reward").isNumber() && record.get("reward").doubleValue() > max) {
                max = record.get("reward").doubleValue();
                best = i;
            }
        }
        for (int i = 0; i < 4; i++) {
            assertEquals(i == best, records.get(i).get("best").asBoolean(), records.toString());
        }
        // stdout: a line per answer with its reward, the best marked, then the best answer and its ids.
        List<String> lines = run.out().strip().lines().toList();
        for (int i = 0; i < 4; i++) {
            JsonNode record = records.get(i);
            assertEquals(String.format(java.util.Locale.ROOT, "answer %d of 4 (seed %d): reward %.4f%s", i + 1, 11 + i,
                    record.get("reward").doubleValue(), i == best ? "  best" : ""), lines.get(i));
        }
        List<Integer> bestIds = new ArrayList<>();
        records.get(best).get("ids").forEach(id -> bestIds.add(id.asInt()));
        assertEquals(String.join(",", bestIds.stream().map(String::valueOf).toList()), run.lastLine());
        assertTrue(run.out().contains(records.get(best).get("text").asText()), run.out());

        // Each reward recomputed: the chat [user: prompt, assistant: answer] written to a file, read by the data
        // pipeline as training reads chats, scored one at a time.
        Path chats = dir.resolve("chats.jsonl");
        List<String> chatLines = new ArrayList<>();
        for (JsonNode record : records) {
            chatLines.add(JSON.writeValueAsString(Map.of("messages", List.of(
                    Map.of("role", "user", "content", PROMPT),
                    Map.of("role", "assistant", "content", record.get("text").asText())))));
        }
        Files.write(chats, chatLines);
        ModelConfig config = ModelConfig.read(base.resolve("config.json"));
        List<TokenizedSample> samples = SampleCache.tokenize(new DataConfig(List.of(chats.toString()), List.of(), 0,
                "auto", "mistral", null, 2048, false, "all_assistant_turns", false),
                TrainingData.tokenizer(base, config, false), 0).train();
        assertEquals(4, samples.size());
        try (RewardScorer scorer = RewardScorer.load(base, rewardModel, MistralCheckpoint.DENSE, Device.cpu())) {
            for (int i = 0; i < 4; i++) {
                float expected = scorer.rewards(List.of(samples.get(i).inputIds()), 1)[0];
                assertEquals(expected, records.get(i).get("reward").floatValue(), 1e-6, "answer " + (i + 1));
            }
        }
    }

    @Test
    void seededRunsRepeatAndAnswerIIsPlainGenerateWithSeedSPlusI() throws Exception {
        List<String> args = bestOf("--temperature", "1.5", "--seed", "5", "--output-ids");
        MixtuneCliTest.Result first = MixtuneCliTest.run(args.toArray(String[]::new));
        MixtuneCliTest.Result second = MixtuneCliTest.run(args.toArray(String[]::new));
        assertEquals(0, first.code(), first.err());
        assertEquals(first.out(), second.out());
        Path answers = dir.resolve("repeat.jsonl");
        List<String> withOutput = new ArrayList<>(args);
        withOutput.addAll(List.of("--output", answers.toString()));
        assertEquals(0, MixtuneCliTest.run(withOutput.toArray(String[]::new)).code());
        List<String> distinct = new ArrayList<>();
        for (String line : Files.readAllLines(answers)) {
            JsonNode record = JSON.readTree(line);
            MixtuneCliTest.Result plain = MixtuneCliTest.run("generate", "--model", base.toString(), "--prompt", PROMPT,
                    "--chat", "--max-new-tokens", "6", "--temperature", "1.5", "--seed",
                    String.valueOf(record.get("seed").asInt()), "--output-ids");
            assertEquals(0, plain.code(), plain.err());
            List<String> ids = new ArrayList<>();
            record.get("ids").forEach(id -> ids.add(id.asText()));
            assertEquals(String.join(",", ids), plain.lastLine(), "answer " + record.get("answer"));
            if (!distinct.contains(String.join(",", ids))) {
                distinct.add(String.join(",", ids));
            }
        }
        assertTrue(distinct.size() > 1, "4 samples at temperature 1.5 should differ: " + distinct);
    }

    @Test
    void wrongInputsStopBeforeAnyWorkNamingTheFlag() throws Exception {
        Path mixtral = dir.resolve("tiny-mixtral");
        assertEquals(0, MixtuneCliTest.run("init-model", "--preset", "tiny-mixtral", "--out", mixtral.toString())
                .code());
        Path output = dir.resolve("never-written.jsonl");
        String causal = "src/test/resources/golden/sft/mistral/adapter";
        Map<String, List<String>> cases = new java.util.LinkedHashMap<>();
        List<String> causalReward = bestOf("--temperature", "1");
        causalReward.set(causalReward.indexOf("--reward") + 1, causal);
        cases.put("--reward " + causal + "/adapter_config.json: a causal LM's adapter (modules_to_save null), not a "
                + "reward model's", causalReward);
        List<String> asPolicy = bestOf("--temperature", "1");
        asPolicy.addAll(List.of("--adapter", rewardModel.toString()));
        cases.put("--adapter " + rewardModel + "/adapter_config.json: a reward model's adapter (task_type SEQ_CLS, "
                + "modules_to_save [score]), not a causal LM's", asPolicy);
        List<String> otherBase = bestOf("--temperature", "1");
        otherBase.set(2, mixtral.toString());
        cases.put("--reward " + rewardModel + ": a reward model for another base than " + mixtral + ": ", otherBase);
        List<String> none = bestOf("--temperature", "1");
        none.set(none.indexOf("4"), "0");
        cases.put("--best-of expects at least 1 answer, got 0", none);
        cases.put("--best-of 4 samples its answers, but decoding is greedy (the 4 answers would be one): give "
                + "--temperature T > 0", bestOf());
        cases.put("--best-of 4 samples its answers, but decoding is greedy", bestOf("--greedy"));
        List<String> noReward = bestOf("--temperature", "1");
        noReward.subList(noReward.indexOf("--reward"), noReward.indexOf("--reward") + 2).clear();
        cases.put("--best-of 4 needs --reward DIR", noReward);
        cases.put("--best-of scores the prompt and each answer as a chat: give the prompt as --prompt TEXT", List.of("generate",
                "--model", base.toString(), "--prompt-ids", "1,2", "--best-of", "2", "--reward",
                rewardModel.toString(), "--temperature", "1"));
        for (Map.Entry<String, List<String>> entry : cases.entrySet()) {
            List<String> args = new ArrayList<>(entry.getValue());
            args.addAll(List.of("--output", output.toString()));
            MixtuneCliTest.Result run = MixtuneCliTest.run(args.toArray(String[]::new));
            assertEquals(2, run.code(), entry.getKey() + ": " + run.err());
            assertEquals(1, run.err().strip().lines().count(), run.err());
            assertTrue(run.err().startsWith("mixtune generate: " + entry.getKey()), run.err());
            assertEquals("", run.out());
            assertFalse(Files.exists(output));
        }
    }
}
