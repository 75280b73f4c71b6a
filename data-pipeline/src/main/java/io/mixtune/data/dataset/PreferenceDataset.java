package io.mixtune.data.dataset;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.preference.PreferenceFileReader;
import io.mixtune.data.preference.PreferenceSample;
import io.mixtune.data.preference.PreferenceTokenizer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Preference files read into tokenized pairs, counted in a {@link DataReport} as chats are: a pair is a record, its
 * tokens are prompt + chosen + rejected and its trained tokens the two completions. A pair whose chosen equals its
 * rejected, one with an empty completion and one whose prompt alone fills max_seq_len are invalid: with skip_invalid
 * they are counted by reason and skipped, otherwise the first stops the run with its file:line.
 */
public final class PreferenceDataset {
    private PreferenceDataset() {}

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
                report.sample(sample.promptIds().length + completions, completions, false, false);
                samples.add(sample);
            }, e -> invalid(e, skipInvalid, report));
        }
        return samples;
    }

    private static void invalid(InvalidRecordException e, boolean skipInvalid, DataReport report) {
        if (!skipInvalid) {
            throw e;
        }
        report.skipped(e.reason());
    }
}
