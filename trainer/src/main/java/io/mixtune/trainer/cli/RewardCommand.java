package io.mixtune.trainer.cli;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.data.dataset.ChatDataset;
import io.mixtune.data.dataset.DataConfig;
import io.mixtune.data.dataset.DataReport;
import io.mixtune.data.dataset.PreferenceDataset;
import io.mixtune.data.dataset.SampleCache;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.preference.PreferenceTokenizer;
import io.mixtune.data.read.JsonRecords;
import io.mixtune.data.template.TokenizedSample;
import io.mixtune.lora.adapter.PeftAdapter;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.trainer.InputDirectories;
import io.mixtune.trainer.reward.RewardHead;
import io.mixtune.trainer.reward.RewardScorer;
import io.mixtune.trainer.reward.RewardSequences;
import io.mixtune.trainer.run.TrainingData;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Set;
import org.apache.commons.cli.CommandLine;
import org.apache.commons.cli.Options;

/**
 * `mixtune reward`: a trained reward model's scores. On preference pairs, each pair's chosen and rejected rewards,
 * and the accuracy and mean margin over the file; on chats, one reward per chat. The scores are JSONL, written to
 * --output (the summary then on stdout) or to stdout. Sequences are tokenized as training tokenizes them (template,
 * max_seq_len).
 */
final class RewardCommand implements Command {
    private static final ObjectMapper JSON = new ObjectMapper();

    @Override
    public String name() {
        return "reward";
    }

    @Override
    public String summary() {
        return "score preference pairs (accuracy, mean margin) or chats with a reward model (train.method: reward)";
    }

    @Override
    public String usage() {
        return "--model DIR --adapter RM --data FILE [--output FILE] [--skip-invalid] [--template mistral|chatml] [--max-seq-len N] [--batch-size N] "
                + "[--quantize nf4|none] [--device auto|cpu|gpu]";
    }

    @Override
    public Options options() {
        return new Options()
                .addOption(Mixtune.option("model", "DIR", "the base model the reward model was trained on"))
                .addOption(Mixtune.option("adapter", "DIR", "the reward model: a run's output_dir/adapter (LoRA and "
                        + "score head, PEFT task_type SEQ_CLS)"))
                .addOption(Mixtune.option("data", "FILE", "preference pairs (as DPO and reward training read them) "
                        + "or chats (any format mixtune trains on), JSONL or JSON, plain or gzip"))
                .addOption(Mixtune.option("output", "FILE", "where the scores go, one JSON record per pair or chat "
                        + "(default: stdout, the summary then on stderr)"))
                .addOption(Mixtune.option("skip-invalid", null, "skip a pair or chat that cannot be scored (a prompt "
                        + "longer than --max-seq-len, an empty answer ...), counted in the summary, as data.skip_invalid "
                        + "does in training; without it the first one stops with its file:line"))
                .addOption(Mixtune.option("with-ids", null, "also write the token ids each reward was computed on "
                        + "(chosen_ids and rejected_ids, or input_ids), to check the scores elsewhere"))
                .addOption(Mixtune.option("template", "T", "mistral (default) or chatml, as the training recipe's"))
                .addOption(Mixtune.option("max-seq-len", "N", "as data.max_seq_len in training (default 2048, or the "
                        + "model's max_position_embeddings if fewer)"))
                .addOption(Mixtune.option("batch-size", "N", "sequences per forward pass (default 8)"))
                .addOption(Mixtune.option("quantize", "TYPE", "nf4 to load the linear layers in 4 bits, or none "
                        + "(default)"))
                .addOption(Mixtune.deviceOption());
    }

    @Override
    public int run(CommandLine line, PrintStream out) throws Exception {
        Path modelDir = Path.of(Mixtune.requiredOption(line, "model"));
        InputDirectories.requireModel("model", modelDir);
        Path adapterDir = Path.of(Mixtune.requiredOption(line, "adapter"));
        InputDirectories.requireAdapter("adapter", adapterDir);
        try {
            PeftAdapter.readConfig(adapterDir.resolve(PeftAdapter.CONFIG_FILE), Set.of(RewardHead.MODULE));
        } catch (IllegalArgumentException e) {
            throw new UsageException("--adapter " + e.getMessage());
        }
        String dataFile = Mixtune.requiredOption(line, "data");
        Path data = DataConfig.file(dataFile);
        if (!Files.isRegularFile(data)) {
            throw new UsageException("--data " + dataFile + ": no such file");
        }
        String template = line.getOptionValue("template", RewardSequences.DEFAULT_TEMPLATE);
        if (!RewardSequences.TEMPLATES.contains(template)) {
            throw new UsageException("--template expects mistral or chatml, got '" + template + "'");
        }
        int batchSize = Mixtune.intOption(line, "batch-size", RewardScorer.DEFAULT_BATCH_SIZE);
        if (batchSize < 1) {
            throw new UsageException("--batch-size must be at least 1, got " + batchSize);
        }
        ModelConfig config;
        try {
            config = ModelConfig.read(modelDir.resolve("config.json"));
        } catch (IllegalArgumentException e) {
            throw new UsageException("--model " + modelDir + ": " + e.getMessage());
        }
        int maxSeqLen = Mixtune.intOption(line, "max-seq-len", RewardSequences.defaultMaxSeqLen(config));
        SampleCache.TokenizerFile tokenizer;
        try {
            tokenizer = TrainingData.tokenizer(modelDir, config, false);
        } catch (IllegalArgumentException e) {
            throw new UsageException("--model " + e.getMessage());
        }
        boolean skipInvalid = line.hasOption("skip-invalid");
        long skipped;

        // The data first: a bad file is reported before the model loads.
        boolean pairs = holdsPairs(data);
        List<long[]> sequences = new ArrayList<>();
        List<String> sources = new ArrayList<>();
        List<PreferenceSample> samples = List.of();
        if (pairs) {
            DataConfig dataConfig = new DataConfig(List.of(dataFile), List.of(), 0, "auto", template, null, maxSeqLen,
                    false, "all_assistant_turns", skipInvalid);
            // As reward training reads pairs: one longer than max_seq_len is dropped, never cut.
            PreferenceTokenizer pairTokenizer = new PreferenceTokenizer(dataConfig.chatTemplate(tokenizer.bosId(),
                    tokenizer.eosId()), tokenizer.open(), maxSeqLen, tokenizer.eosId(),
                    PreferenceTokenizer.Truncation.DROP);
            DataReport report = new DataReport();
            samples = PreferenceDataset.read(List.of(data), pairTokenizer, skipInvalid, report);
            skipped = report.skippedTotal();
            for (PreferenceSample sample : samples) {
                sources.add(sample.source());
            }
        } else {
            ChatDataset chats;
            try (RewardSequences chatSequences = new RewardSequences(tokenizer, template, maxSeqLen)) {
                chats = chatSequences.chats(data, skipInvalid);
            }
            skipped = chats.report().skippedTotal();
            for (TokenizedSample sample : chats.train()) {
                sequences.add(sample.inputIds());
                sources.add(sample.source());
            }
        }
        if (sources.isEmpty()) {
            throw new UsageException("--data " + dataFile + ": nothing to score");
        }

        float[] rewards = null;
        RewardScorer.PairScores scores = null;
        try (RewardScorer scorer = RewardScorer.load(modelDir, adapterDir, ModelLoading.linearFactory(
                line.getOptionValue("quantize")), Mixtune.device(line))) {
            if (pairs) {
                scores = scorer.pairs(samples, batchSize);
            } else {
                rewards = scorer.rewards(sequences, batchSize);
            }
        }
        boolean withIds = line.hasOption("with-ids");
        List<String> records = new ArrayList<>();
        String summary;
        if (pairs) {
            int n = sources.size();
            for (int i = 0; i < n; i++) {
                PreferenceSample sample = samples.get(i);
                ObjectNode record = JSON.createObjectNode().put("source", sources.get(i))
                        .put("reward_chosen", scores.chosen()[i]).put("reward_rejected", scores.rejected()[i])
                        .put("margin", scores.margin(i));
                if (withIds) {
                    record.putPOJO("chosen_ids", RewardScorer.concat(sample.promptIds(), sample.chosenIds()));
                    record.putPOJO("rejected_ids", RewardScorer.concat(sample.promptIds(), sample.rejectedIds()));
                }
                records.add(JSON.writeValueAsString(record));
            }
            summary = String.format(Locale.ROOT, "%d pairs: accuracy %.4f, mean margin %.4f", n, scores.accuracy(),
                    scores.meanMargin()) + (skipped > 0 ? " (" + skipped + " skipped)" : "");
        } else {
            for (int i = 0; i < rewards.length; i++) {
                ObjectNode record = JSON.createObjectNode().put("source", sources.get(i)).put("reward", rewards[i]);
                if (withIds) {
                    record.putPOJO("input_ids", sequences.get(i));
                }
                records.add(JSON.writeValueAsString(record));
            }
            summary = String.format(Locale.ROOT, "%d chats scored", rewards.length)
                    + (skipped > 0 ? " (" + skipped + " skipped)" : "");
        }
        if (line.hasOption("output")) {
            Files.write(Path.of(line.getOptionValue("output")), records);
            out.println(summary + "; scores in " + line.getOptionValue("output"));
        } else {
            records.forEach(out::println);
            System.err.println(summary);
        }
        return Mixtune.OK;
    }

    /** Whether the file's first record is a preference pair (chosen and rejected), else chats. */
    private static boolean holdsPairs(Path file) {
        boolean[] pair = new boolean[1];
        try {
            new JsonRecords(file).read((lineNumber, record) -> {
                pair[0] = record.has("chosen") && record.has("rejected");
                throw new FirstRecordRead();
            }, e -> {});
        } catch (FirstRecordRead e) {
            return pair[0];
        }
        return false;
    }

    /** Stops reading a file after its first record. */
    private static final class FirstRecordRead extends RuntimeException {
        FirstRecordRead() {
            super(null, null, false, false);
        }
    }
}
