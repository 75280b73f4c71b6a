package io.mixtune.data.chat;

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

    /** The problem without its particulars: the text before the first colon. */
    public String reason() {
        int colon = problem.indexOf(':');
        String head = colon < 0 ? problem : problem.substring(0, colon);
        return head.replaceAll("message \\d+", "message N").replaceAll("\\d+", "N");
    }
}
