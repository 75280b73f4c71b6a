package io.mixtune.data.preference;

import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.read.JsonRecords;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Consumer;

/**
 * Reads the unpaired examples of a set of files as TRL 1.13's KTOTrainer takes a dataset: unpaired records
 * ({@link LabeledCompletion}) as they are, or preference pairs unpaired ({@link LabeledCompletion#unpair}) over all
 * files together, as one dataset. The first usable record says which: a record of the other kind is invalid (TRL
 * decides from the first example too, and a dataset has one set of columns). Unusable records go to the handler with
 * file:line.
 */
public final class LabeledFileReader {
    private LabeledFileReader() {}

    public static List<LabeledCompletion> read(List<Path> files, Consumer<InvalidRecordException> invalid) {
        List<LabeledCompletion> unpaired = new ArrayList<>();
        List<PreferencePair> pairs = new ArrayList<>();
        String[] first = new String[1];
        for (Path file : files) {
            new JsonRecords(file).read((line, record) -> {
                String source = file + ":" + line;
                try {
                    if (!record.isObject()) {
                        throw new InvalidRecordException(source, "a record is a JSON object, got "
                                + record.getNodeType());
                    }
                    boolean isUnpaired = LabeledCompletion.isUnpaired(record);
                    if (!isUnpaired && !record.has("chosen") && !record.has("rejected")) {
                        // e.g. an SFT text or chat: "missing field chosen" would name the wrong layout
                        List<String> fields = new ArrayList<>();
                        record.fieldNames().forEachRemaining(fields::add);
                        throw new InvalidRecordException(source, "expected an unpaired example {prompt, completion, "
                                + "label} or a preference pair {prompt, chosen, rejected}, got the fields " + fields);
                    }
                    if (first[0] != null && isUnpaired != pairs.isEmpty()) {
                        throw new InvalidRecordException(source, (isUnpaired ? "an unpaired example" : "a preference "
                                + "pair") + " among " + (isUnpaired ? "pairs" : "unpaired examples") + " (the first "
                                + "record, " + first[0] + "): the data is one or the other");
                    }
                    if (isUnpaired) {
                        unpaired.add(LabeledCompletion.parse(record, source));
                    } else {
                        pairs.add(PreferencePair.parse(record, source));
                    }
                    first[0] = first[0] == null ? source : first[0];
                } catch (InvalidRecordException e) {
                    invalid.accept(e);
                }
            }, invalid);
        }
        return pairs.isEmpty() ? unpaired : LabeledCompletion.unpair(pairs);
    }
}
