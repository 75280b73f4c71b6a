package io.mixtune.data.dataset;

import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.SftRecord;
import io.mixtune.data.read.ChatFileReader;
import io.mixtune.data.read.ChatFormat;
import io.mixtune.data.template.SampleBuilder;
import io.mixtune.data.template.TokenizedSample;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * SFT data files (chats, texts, prompts with completions) read into tokenized samples, split into training and
 * validation sets.
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
        return read(files, format, ChatFileReader.TEXT_FIELD, builder, skipInvalid, report);
    }

    /** As {@link #read(List, ChatFormat, SampleBuilder, boolean, DataReport)}, texts read from {@code textField}. */
    public static List<TokenizedSample> read(List<Path> files, ChatFormat format, String textField,
            SampleBuilder builder, boolean skipInvalid, DataReport report) {
        List<TokenizedSample> samples = new ArrayList<>();
        Consumer<InvalidRecordException> invalid = e -> {
            if (!skipInvalid) {
                throw e;
            }
            report.skipped(e.reason());
        };
        for (Path file : files) {
            new ChatFileReader(file, format, textField).readRecords(record -> add(record, builder, invalid, report,
                    samples), invalid);
        }
        return samples;
    }

    private static void add(SftRecord record, SampleBuilder builder, Consumer<InvalidRecordException> invalid,
            DataReport report, List<TokenizedSample> samples) {
        SampleBuilder.Built built;
        try {
            built = builder.build(record);
        } catch (InvalidRecordException e) {
            if (DataReport.NO_TARGET.equals(e.reason())) {
                // A conversation whose first prompt fills max_seq_len is counted and skipped even without
                // skip_invalid: the data is fine, the length is the recipe's choice (TRL drops it too).
                report.conversation();
                report.skipped(DataReport.NO_TARGET);
            } else {
                invalid.accept(e); // one the template refuses (mistral's strict alternation)
            }
            return;
        }
        report.conversation();
        TokenizedSample sample = built.sample();
        report.sample(sample.length(), sample.targetCount(), built.fit() == SampleBuilder.Fit.TRAILING_TURNS_DROPPED,
                built.fit() == SampleBuilder.Fit.TARGET_CUT,
                record instanceof Conversation conversation && conversation.droppedTrailingMessages() > 0);
        samples.add(sample);
    }

    /**
     * Training files, and validation either from its own files or as a seeded random fraction of the training data.
     *
     * @param validationFiles files of the validation set, or empty to split off {@code validationRatio} instead
     */
    public static ChatDataset load(List<Path> files, List<Path> validationFiles, double validationRatio, long seed,
            ChatFormat format, SampleBuilder builder, boolean skipInvalid) {
        return load(files, validationFiles, validationRatio, seed, format, ChatFileReader.TEXT_FIELD, builder,
                skipInvalid);
    }

    /** As {@link #load(List, List, double, long, ChatFormat, SampleBuilder, boolean)}, texts read from textField. */
    public static ChatDataset load(List<Path> files, List<Path> validationFiles, double validationRatio, long seed,
            ChatFormat format, String textField, SampleBuilder builder, boolean skipInvalid) {
        DataReport report = new DataReport();
        List<TokenizedSample> train = read(files, format, textField, builder, skipInvalid, report);
        if (!validationFiles.isEmpty()) {
            return new ChatDataset(train, read(validationFiles, format, textField, builder, skipInvalid, report),
                    report);
        }
        ValidationSplit<TokenizedSample> split = ValidationSplit.of(train, validationRatio, seed);
        return new ChatDataset(split.train(), split.validation(), report);
    }
}
