package io.mixtune.data.dataset;

import io.mixtune.data.template.SampleBuilder;
import java.util.Locale;
import java.util.Map;
import java.util.TreeMap;

/** What reading a dataset did: every record is counted somewhere, nothing is dropped silently. */
public final class DataReport {
    private long conversations;
    private long samples;
    private long tokens;
    private long targetTokens;
    private long trailingTurnsDropped;
    private long targetsCut;
    private long endedAfterAnswer;
    private final Map<String, Long> skipped = new TreeMap<>();

    /** A report as the data cache stored it. */
    static DataReport of(long conversations, long samples, long tokens, long targetTokens, long trailingTurnsDropped,
            long targetsCut, long endedAfterAnswer, Map<String, Long> skipped) {
        DataReport report = new DataReport();
        report.conversations = conversations;
        report.samples = samples;
        report.tokens = tokens;
        report.targetTokens = targetTokens;
        report.trailingTurnsDropped = trailingTurnsDropped;
        report.targetsCut = targetsCut;
        report.endedAfterAnswer = endedAfterAnswer;
        report.skipped.putAll(skipped);
        return report;
    }

    void conversation() {
        conversations++;
    }

    /** @param endedAfterAnswer whether messages after the last assistant message were dropped */
    void sample(int length, int targets, boolean trailingDropped, boolean targetCut, boolean endedAfterAnswer) {
        samples++;
        tokens += length;
        targetTokens += targets;
        trailingTurnsDropped += trailingDropped ? 1 : 0;
        targetsCut += targetCut ? 1 : 0;
        this.endedAfterAnswer += endedAfterAnswer ? 1 : 0;
    }

    void skipped(String reason) {
        skipped.merge(reason, 1L, Long::sum);
    }

    /** Records read, valid or not. */
    public long records() {
        return conversations + skippedTotal() - skipped.getOrDefault(NO_TARGET, 0L);
    }

    static final String NO_TARGET = SampleBuilder.NO_TARGET_LEFT;

    public long conversations() {
        return conversations;
    }

    public long samples() {
        return samples;
    }

    public long tokens() {
        return tokens;
    }

    public long targetTokens() {
        return targetTokens;
    }

    public long trailingTurnsDropped() {
        return trailingTurnsDropped;
    }

    public long targetsCut() {
        return targetsCut;
    }

    /** Samples whose record went on after the last assistant message (those messages dropped: nothing to learn). */
    public long endedAfterAnswer() {
        return endedAfterAnswer;
    }

    /** Skipped records by reason (invalid records, and samples with no target left after truncation). */
    public Map<String, Long> skipped() {
        return Map.copyOf(skipped);
    }

    public long skippedTotal() {
        return skipped.values().stream().mapToLong(Long::longValue).sum();
    }

    @Override
    public String toString() {
        StringBuilder text = new StringBuilder(String.format(Locale.ROOT,
                "%,d samples (%,d tokens, %,d trained) from %,d records; %,d lost trailing turns to max_seq_len, %,d had "
                        + "a target cut, %,d had messages after the last answer (dropped)", samples, tokens,
                targetTokens, records(), trailingTurnsDropped, targetsCut, endedAfterAnswer));
        if (!skipped.isEmpty()) {
            text.append("; skipped ").append(skippedTotal()).append(':');
            skipped.forEach((reason, count) -> text.append(String.format(Locale.ROOT, " %,d %s;", count, reason)));
        }
        return text.toString();
    }
}
