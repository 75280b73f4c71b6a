package io.mixtune.data.dataset;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.read.ChatFileReader;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.data.template.SampleBuilder;
import io.mixtune.data.template.TokenizedSample;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;

/**
 * Chat files read into tokenized samples, split into training and validation sets.
 *
 * @param train training samples in file order
 * @param validation validation samples (empty without a split)
 */
public record ChatDataset(List<TokenizedSample> train, List<TokenizedSample> validation, DataReport report) {

    /**
     * @param format the files' format, or null to detect it per file
     * @param skipInvalid skip (and count) records that cannot be used; otherwise the first one stops the run with its
     *     file:line and what is wrong
     */
    public static List<TokenizedSample> read(List<Path> files, ChatFormat format, SampleBuilder builder,
            boolean skipInvalid, DataReport report) {
        List<TokenizedSample> samples = new ArrayList<>();
        for (Path file : files) {
            new ChatFileReader(file, format).read(conversation -> add(conversation, builder, skipInvalid, report, samples),
                    invalid -> {
                        if (!skipInvalid) {
                            throw invalid;
                        }
                        report.skipped(invalid.reason());
                    });
        }
        return samples;
    }

    private static void add(Conversation conversation, SampleBuilder builder, boolean skipInvalid, DataReport report,
            List<TokenizedSample> samples) {
        report.conversation();
        SampleBuilder.Built built;
        try {
            built = builder.build(conversation);
        } catch (InvalidRecordException e) {
            // A conversation whose first prompt fills max_seq_len is counted and skipped even without skip_invalid:
            // the data is fine, the length is the recipe's choice.
            report.skipped(DataReport.NO_TARGET);
            return;
        }
        TokenizedSample sample = built.sample();
        report.sample(sample.length(), sample.targetCount(), built.fit() == SampleBuilder.Fit.TRAILING_TURNS_DROPPED,
                built.fit() == SampleBuilder.Fit.TARGET_CUT);
        samples.add(sample);
    }

    /**
     * Training files, and validation either from its own files or as a seeded random fraction of the training data.
     *
     * @param validationFiles files of the validation set, or empty to split off {@code validationRatio} instead
     */
    public static ChatDataset load(List<Path> files, List<Path> validationFiles, double validationRatio, long seed,
            ChatFormat format, SampleBuilder builder, boolean skipInvalid) {
        if (!(validationRatio >= 0 && validationRatio < 1)) {
            throw new IllegalArgumentException("validation ratio must lie in [0, 1), got " + validationRatio);
        }
        DataReport report = new DataReport();
        List<TokenizedSample> train = read(files, format, builder, skipInvalid, report);
        if (!validationFiles.isEmpty()) {
            return new ChatDataset(train, read(validationFiles, format, builder, skipInvalid, report), report);
        }
        int validationSize = (int) Math.round(train.size() * validationRatio);
        if (validationSize == 0) {
            return new ChatDataset(train, List.of(), report);
        }
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < train.size(); i++) {
            order.add(i);
        }
        java.util.Collections.shuffle(order, new Random(seed));
        boolean[] isValidation = new boolean[train.size()];
        for (int i = 0; i < validationSize; i++) {
            isValidation[order.get(i)] = true;
        }
        List<TokenizedSample> kept = new ArrayList<>();
        List<TokenizedSample> validation = new ArrayList<>();
        for (int i = 0; i < train.size(); i++) {
            (isValidation[i] ? validation : kept).add(train.get(i));
        }
        return new ChatDataset(kept, validation, report);
    }
}
