package io.mixtune.merging;

import java.util.Collection;
import java.util.Locale;

/** "did you mean ...?" for a misspelt key or name: the valid one at the smallest edit distance, if it is close. */
public final class NearestName {
    private NearestName() {}

    /** {@code " (did you mean 'x'?)"}, or "" when nothing is within a third of the word's length. */
    static String suggestion(String typed, Collection<String> valid) {
        String best = nearest(typed, valid);
        return best == null ? "" : " (did you mean '" + best + "'?)";
    }

    /** The valid name nearest to {@code typed}, or null when none is within a third of its length (at least 2). */
    public static String nearest(String typed, Collection<String> valid) {
        String best = null;
        int bestDistance = Integer.MAX_VALUE;
        for (String candidate : valid) {
            int distance = editDistance(typed.toLowerCase(Locale.ROOT), candidate.toLowerCase(Locale.ROOT));
            if (distance < bestDistance) {
                best = candidate;
                bestDistance = distance;
            }
        }
        return best != null && bestDistance <= Math.max(2, typed.length() / 3) ? best : null;
    }

    /** Levenshtein distance, with a swap of two neighbours counted as one edit (Damerau's transposition). */
    static int editDistance(String a, String b) {
        int[][] d = new int[a.length() + 1][b.length() + 1];
        for (int i = 0; i <= a.length(); i++) {
            d[i][0] = i;
        }
        for (int j = 0; j <= b.length(); j++) {
            d[0][j] = j;
        }
        for (int i = 1; i <= a.length(); i++) {
            for (int j = 1; j <= b.length(); j++) {
                int cost = a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1;
                d[i][j] = Math.min(Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1), d[i - 1][j - 1] + cost);
                if (i > 1 && j > 1 && a.charAt(i - 1) == b.charAt(j - 2) && a.charAt(i - 2) == b.charAt(j - 1)) {
                    d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
                }
            }
        }
        return d[a.length()][b.length()];
    }
}
