package io.mixtune.data.dataset;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.preference.PreferenceFileReader;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.preference.PreferenceTokenizer;
import io.mixtune.data.preference.StageSplit;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Preference files read into tokenized pairs for (Stage-)DPO and reward models, counted in a {@link DataReport} as chats
 * are: a pair is a record, its tokens are prompt + chosen + rejected and its trained tokens the two completions (a
 * completion cut at max_seq_len counts as a target cut). A pair whose chosen equals its rejected, one with an empty
 * completion, one whose prompt alone fills max_seq_len and, for a reward model, one longer than max_seq_len are
 * invalid: with skip_invalid they are counted by reason and skipped, otherwise the first stops the run with its
 * file:line.
 *
 * @param stages the training pairs of each stage, in file order
 * @param validation the validation pairs (empty without a split)
 */
public record PreferenceDataset(List<List<PreferenceSample>> stages, List<PreferenceSample> validation,
        DataReport report) {

    /**
     * @param stageFiles the training files of each stage; one list alone is split into {@code stageCount} near-equal
     *     parts in file order
     * @param validationFiles files of the validation set, or empty to hold out {@code validationRatio} of each
     *     stage's pairs (seeded)
     */
    public static PreferenceDataset load(List<List<Path>> stageFiles, int stageCount, List<Path> validationFiles,
            double validationRatio, long seed, PreferenceTokenizer tokenizer, boolean skipInvalid) {
        DataReport report = new DataReport();
        List<List<PreferenceSample>> pools = new ArrayList<>();
        for (List<Path> files : stageFiles) {
            pools.add(read(files, tokenizer, skipInvalid, report));
        }
        List<PreferenceSample> validation = new ArrayList<>();
        if (!validationFiles.isEmpty()) {
            validation.addAll(read(validationFiles, tokenizer, skipInvalid, report));
        } else {
            for (int k = 0; k < pools.size(); k++) {
                ValidationSplit<PreferenceSample> split = ValidationSplit.of(pools.get(k), validationRatio, seed + k);
                pools.set(k, split.train());
                validation.addAll(split.validation());
            }
        }
        List<List<PreferenceSample>> stages = pools.size() == 1 ? StageSplit.byOrder(pools.get(0), stageCount) : pools;
        for (int k = 0; k < stages.size(); k++) {
            if (stages.get(k).isEmpty()) {
                throw new EmptyStageException("stage " + (k + 1) + " has no usable preference pair (" + report
                        + ")");
            }
        }
        return new PreferenceDataset(List.copyOf(stages), List.copyOf(validation), report);
    }

    public static List<PreferenceSample> read(List<Path> files, PreferenceTokenizer tokenizer, boolean skipInvalid,
            DataReport report) {
        List<PreferenceSample> samples = new ArrayList<>();
        for (Path file : files) {
            new PreferenceFileReader(file).read(pair -> {
                PreferenceSample sample;
                try {
                    sample = tokenizer.tokenize(pair);
                } catch (InvalidRecordException e) {
                    invalid(e, skipInvalid, report);
                    return;
                }
                report.conversation();
                int completions = sample.chosenIds().length + sample.rejectedIds().length;
                report.sample(sample.promptIds().length + completions, completions, false, sample.truncated(), false);
                samples.add(sample);
            }, e -> invalid(e, skipInvalid, report));
        }
        return samples;
    }

    /** Throws the record's problem, or with skip_invalid counts it by reason. */
    static void invalid(InvalidRecordException e, boolean skipInvalid, DataReport report) {
        if (!skipInvalid) {
            throw e;
        }
        report.skipped(e.reason());
    }

    /** Pairs of all stages. */
    public int trainPairs() {
        return stages.stream().mapToInt(List::size).sum();
    }

    /** A stage left with no pair to train on: the data files the recipe names for it are what to fix. */
    public static final class EmptyStageException extends IllegalArgumentException {
        EmptyStageException(String message) {
            super(message);
        }
    }
}
