package io.mixtune.data.chat;

import java.util.regex.Pattern;

/**
 * A record of a data file that cannot be used, with where it is (file:line) and what is wrong; {@link #reason()} is
 * a short category for the counts that skip_invalid reports.
 */
public final class InvalidRecordException extends RuntimeException {
    private final String source;
    private final String problem;

    public InvalidRecordException(String source, String problem) {
        super(source + ": " + problem);
        this.source = source;
        this.problem = problem;
    }

    public String source() {
        return source;
    }

    public String problem() {
        return problem;
    }

    /**
     * The problem without its particulars, so that the report counts alike records together: the text before the
     * first colon, with each number that stands alone ("message 3", "data[3]") as N; a number that is part of a name
     * ("UTF-8", "v0.3") stays.
     */
    public String reason() {
        int colon = problem.indexOf(':');
        String head = colon < 0 ? problem : problem.substring(0, colon);
        return STANDALONE_NUMBER.matcher(head).replaceAll("N");
    }

    private static final Pattern STANDALONE_NUMBER = Pattern.compile("(?<![\\w.-])\\d+(?![\\w.-])");
}
