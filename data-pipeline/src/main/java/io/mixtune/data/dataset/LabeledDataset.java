package io.mixtune.data.dataset;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.preference.LabeledCompletion;
import io.mixtune.data.preference.LabeledFileReader;
import io.mixtune.data.preference.LabeledSample;
import io.mixtune.data.preference.PreferenceTokenizer;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

/**
 * Unpaired examples (KTO) read and tokenized ({@link LabeledFileReader}, {@link PreferenceTokenizer#tokenize(
 * LabeledCompletion)}), counted in a {@link DataReport} as chats are: an example is a record, its tokens prompt +
 * completion, its trained tokens the completion. An example whose prompt alone fills max_seq_len, or with an empty
 * completion, is invalid: with skip_invalid counted by reason and skipped, otherwise the first stops the run with its
 * file:line.
 *
 * @param train the training examples in file order (KTO reads them in that order)
 * @param validation the validation examples (empty without a split)
 */
public record LabeledDataset(List<LabeledSample> train, List<LabeledSample> validation, DataReport report) {

    /**
     * @param validationFiles files of the validation set, or empty to hold out {@code validationRatio} of the training
     *     examples (seeded)
     */
    public static LabeledDataset load(List<Path> files, List<Path> validationFiles, double validationRatio, long seed,
            PreferenceTokenizer tokenizer, boolean skipInvalid) {
        DataReport report = new DataReport();
        List<LabeledSample> train = read(files, tokenizer, skipInvalid, report);
        List<LabeledSample> validation = new ArrayList<>();
        if (!validationFiles.isEmpty()) {
            validation.addAll(read(validationFiles, tokenizer, skipInvalid, report));
        } else {
            ValidationSplit<LabeledSample> split = ValidationSplit.of(train, validationRatio, seed);
            train = split.train();
            validation.addAll(split.validation());
        }
        if (train.isEmpty()) {
            throw new IllegalArgumentException("no usable training example (" + report + ")");
        }
        return new LabeledDataset(List.copyOf(train), List.copyOf(validation), report);
    }

    public static List<LabeledSample> read(List<Path> files, PreferenceTokenizer tokenizer, boolean skipInvalid,
            DataReport report) {
        List<LabeledSample> samples = new ArrayList<>();
        for (LabeledCompletion example : LabeledFileReader.read(files, e -> PreferenceDataset.invalid(e, skipInvalid, report))) {
            LabeledSample sample;
            try {
                sample = tokenizer.tokenize(example);
            } catch (InvalidRecordException e) {
                PreferenceDataset.invalid(e, skipInvalid, report);
                continue;
            }
            report.conversation();
            report.sample(sample.promptIds().length + sample.completionIds().length, sample.completionIds().length,
                    false, sample.truncated(), false);
            samples.add(sample);
        }
        return samples;
    }

    /**
     * TRL 1.13 KTOTrainer's warning when the desirable and undesirable examples are unequal in number and neither
     * weight lies in the range the KTO paper's eq. 8 recommends (desirable_weight x n_desirable / (undesirable_weight x
     * n_undesirable) in [1, 4/3]), its words and its bounds (rounded to 2 decimals, its counts as it takes them: n_d at
     * least 1, n_u = n - n_d at least 1); null where TRL says nothing.
     */
    public static String weightWarning(List<LabeledSample> train, double desirableWeight, double undesirableWeight) {
        long desirable = Math.max(train.stream().filter(LabeledSample::label).count(), 1);
        long undesirable = Math.max(train.size() - desirable, 1);
        if (desirable == undesirable) {
            return null;
        }
        double desLower = round2(undesirable * undesirableWeight / desirable);
        double desUpper = round2(undesirable * undesirableWeight / desirable * 1.33);
        double undLower = round2(desirable * desirableWeight / undesirable / 1.33);
        double undUpper = round2(desirable * desirableWeight / undesirable);
        boolean desInRange = desLower <= desirableWeight && desirableWeight <= desUpper;
        boolean undInRange = undLower <= undesirableWeight && undesirableWeight <= undUpper;
        if (desInRange || undInRange) {
            return null;
        }
        return "You have different amounts of desirable/positive and undesirable/negative examples but the weights on "
                + "the desirable and undesirable losses don't seem to be in an ideal range. Based on your data, we "
                + "recommend EITHER desirable_weight in [" + desLower + ", " + desUpper + "] or undesirable_weight in ["
                + undLower + ", " + undUpper + "] (but NOT BOTH). See the documentation on how to optimally set these "
                + "weights.";
    }

    private static double round2(double value) {
        return new java.math.BigDecimal(value).setScale(2, java.math.RoundingMode.HALF_EVEN).doubleValue();
    }
}
