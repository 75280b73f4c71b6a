package io.mixtune.data.template;

import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;
import java.time.LocalDateTime;
import java.time.format.TextStyle;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The Python behaviour that transformers' chat templates reach through jinja2 and that Jinjava does otherwise:
 * {@code json.dumps} (transformers' {@code tojson}), {@code str.strip} and its one-sided forms (jinja2's {@code trim},
 * {@link PythonStringMethods}), {@code str.isspace}, {@code str()} and {@code repr} of what a template prints
 * ({@code True}, {@code ['a', None]}, a float's shortest digits) and {@code datetime.strftime} ({@code strftime_now}).
 */
final class PythonBuiltins {
    private PythonBuiltins() {}

    /** Python's {@code str.isspace()} for one char: Java's whitespace plus the no-break spaces and NEL. */
    static boolean isSpace(char c) {
        return Character.isWhitespace(c) || c == '\u00a0' || c == '\u2007' || c == '\u202f' || c == '\u0085';
    }

    /** {@code s.strip(chars)}: whitespace as {@link #isSpace} where chars is null. */
    static String strip(String s, String chars) {
        return strip(s, chars, true, true);
    }

    /** {@code s.strip(chars)} from the left, the right or both ends ({@code lstrip}, {@code rstrip}). */
    static String strip(String s, String chars, boolean left, boolean right) {
        int start = 0;
        int end = s.length();
        while (left && start < end && stripped(s.charAt(start), chars)) {
            start++;
        }
        while (right && end > start && stripped(s.charAt(end - 1), chars)) {
            end--;
        }
        return s.substring(start, end);
    }

    private static boolean stripped(char c, String chars) {
        return chars == null ? isSpace(c) : chars.indexOf(c) >= 0;
    }

    /**
     * {@code json.dumps(value, ensure_ascii=..., indent=..., separators=..., sort_keys=...)} of plain maps, lists,
     * strings, numbers, booleans and null.
     *
     * @param indent null, a number of spaces, or a string put before each level
     * @param separators null or a two-element list (item separator, key separator)
     */
    static String jsonDumps(Object value, boolean ensureAscii, Object indent, Object separators, boolean sortKeys) {
        String indentUnit = null;
        if (indent instanceof Number n) {
            indentUnit = " ".repeat(Math.max(0, n.intValue()));
        } else if (indent != null) {
            indentUnit = indent.toString();
        }
        String itemSeparator = indentUnit == null ? ", " : ",";
        String keySeparator = ": ";
        if (separators != null) {
            if (!(separators instanceof List<?> pair) || pair.size() != 2) {
                throw new IllegalArgumentException("tojson's separators must be a pair (item, key), got " + separators);
            }
            itemSeparator = String.valueOf(pair.get(0));
            keySeparator = String.valueOf(pair.get(1));
        }
        StringBuilder out = new StringBuilder();
        new JsonWriter(ensureAscii, indentUnit, itemSeparator, keySeparator, sortKeys, out).write(value, 0);
        return out.toString();
    }

    private record JsonWriter(boolean ensureAscii, String indentUnit, String itemSeparator, String keySeparator,
            boolean sortKeys, StringBuilder out) {
        void write(Object value, int depth) {
            if (value == null) {
                out.append("null");
            } else if (value instanceof Map<?, ?> map) {
                List<Map.Entry<?, ?>> entries = new ArrayList<>(map.entrySet());
                if (sortKeys) {
                    entries.sort((a, b) -> String.valueOf(a.getKey()).compareTo(String.valueOf(b.getKey())));
                }
                if (entries.isEmpty()) {
                    out.append("{}");
                    return;
                }
                out.append('{');
                for (int i = 0; i < entries.size(); i++) {
                    separate(i, depth + 1);
                    string(String.valueOf(entries.get(i).getKey()));
                    out.append(keySeparator);
                    write(entries.get(i).getValue(), depth + 1);
                }
                close(depth);
                out.append('}');
            } else if (value instanceof Iterable<?> iterable) {
                List<Object> items = new ArrayList<>();
                iterable.forEach(items::add);
                if (items.isEmpty()) {
                    out.append("[]");
                    return;
                }
                out.append('[');
                for (int i = 0; i < items.size(); i++) {
                    separate(i, depth + 1);
                    write(items.get(i), depth + 1);
                }
                close(depth);
                out.append(']');
            } else if (value instanceof Boolean b) {
                out.append(b ? "true" : "false");
            } else if (value instanceof Double || value instanceof Float) {
                double d = ((Number) value).doubleValue();
                if (Double.isNaN(d)) {
                    out.append("NaN");
                } else if (Double.isInfinite(d)) {
                    // json.dumps' allow_nan texts, where repr writes nan and inf
                    out.append(d > 0 ? "Infinity" : "-Infinity");
                } else {
                    out.append(pythonFloat(d));
                }
            } else if (value instanceof Number) {
                out.append(value);
            } else {
                string(value.toString());
            }
        }

        private void separate(int index, int depth) {
            if (index > 0) {
                out.append(itemSeparator);
            }
            if (indentUnit != null) {
                out.append('\n').append(indentUnit.repeat(depth));
            }
        }

        private void close(int depth) {
            if (indentUnit != null) {
                out.append('\n').append(indentUnit.repeat(depth));
            }
        }

        private void string(String s) {
            out.append('"');
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                switch (c) {
                    case '"' -> out.append("\\\"");
                    case '\\' -> out.append("\\\\");
                    case '\n' -> out.append("\\n");
                    case '\r' -> out.append("\\r");
                    case '\t' -> out.append("\\t");
                    case '\b' -> out.append("\\b");
                    case '\f' -> out.append("\\f");
                    default -> {
                        if (c < 0x20 || (ensureAscii && c > 0x7e)) {
                            out.append(String.format("\\u%04x", (int) c));
                        } else {
                            out.append(c);
                        }
                    }
                }
            }
            out.append('"');
        }
    }

    /**
     * Python's {@code str()} of what a template prints: {@code True}/{@code False}, a float as its {@code repr}
     * ({@code 10000000.0}, where Java writes {@code 1.0E7}), a list or dict as its {@code repr}
     * ({@code ['a', None]}, {@code {'k': 1}}); null for the rest, which Jinjava prints as Python does (its undefined
     * as the empty text, as jinja2 does).
     */
    static String str(Object value) {
        if (value instanceof Boolean || value instanceof Double || value instanceof Float || value instanceof Map<?, ?>
                || value instanceof List<?>) {
            StringBuilder out = new StringBuilder();
            repr(value, out);
            return out.toString();
        }
        return null;
    }

    private static void repr(Object value, StringBuilder out) {
        if (value == null) {
            out.append("None");
        } else if (value instanceof Boolean b) {
            out.append(b ? "True" : "False");
        } else if (value instanceof Map<?, ?> map) {
            out.append('{');
            String separator = "";
            for (Map.Entry<?, ?> entry : map.entrySet()) {
                out.append(separator);
                repr(entry.getKey(), out);
                out.append(": ");
                repr(entry.getValue(), out);
                separator = ", ";
            }
            out.append('}');
        } else if (value instanceof List<?> list) {
            out.append('[');
            String separator = "";
            for (Object item : list) {
                out.append(separator);
                repr(item, out);
                separator = ", ";
            }
            out.append(']');
        } else if (value instanceof Double || value instanceof Float) {
            out.append(pythonFloat(((Number) value).doubleValue()));
        } else if (value instanceof Number) {
            out.append(value);
        } else {
            String s = value.toString();
            char quote = s.indexOf('\'') >= 0 && s.indexOf('"') < 0 ? '"' : '\'';
            out.append(quote);
            for (int i = 0; i < s.length(); i++) {
                char c = s.charAt(i);
                if (c == quote || c == '\\') {
                    out.append('\\').append(c);
                } else if (c == '\n') {
                    out.append("\\n");
                } else if (c == '\r') {
                    out.append("\\r");
                } else if (c == '\t') {
                    out.append("\\t");
                } else if (c < 0x20 || c == 0x7f) {
                    out.append(String.format("\\x%02x", (int) c));
                } else {
                    out.append(c);
                }
            }
            out.append(quote);
        }
    }

    /**
     * Python's {@code repr} of a float (its {@code str}, and its {@code json.dumps} where finite): the fewest digits
     * that read back as it, in scientific notation where the exponent is below -4 or from 16 on: {@code 0.0001},
     * {@code 1e-05}, {@code 10000000.0}, {@code 1e+16}, {@code -0.0}, {@code inf}, {@code nan}.
     */
    static String pythonFloat(double d) {
        if (Double.isNaN(d)) {
            return "nan";
        }
        if (Double.isInfinite(d)) {
            return d > 0 ? "inf" : "-inf";
        }
        if (d == 0) {
            return Double.doubleToRawLongBits(d) < 0 ? "-0.0" : "0.0";
        }
        BigDecimal shortest = shortestDecimal(d);
        String digits = shortest.unscaledValue().abs().toString();
        int exponent = digits.length() - 1 - shortest.scale();
        String sign = d < 0 ? "-" : "";
        if (exponent < -4 || exponent >= 16) {
            String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
            return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + String.format("%02d", Math.abs(exponent));
        }
        if (exponent < 0) {
            return sign + "0." + "0".repeat(-exponent - 1) + digits;
        }
        if (digits.length() <= exponent + 1) {
            return sign + digits + "0".repeat(exponent + 1 - digits.length()) + ".0";
        }
        return sign + digits.substring(0, exponent + 1) + "." + digits.substring(exponent + 1);
    }

    /**
     * The decimal of fewest significant digits that reads back as d, the nearest to d of those (Python's repr;
     * Java 17's Double.toString is not always the shortest). Next to a power of two the gap below d is half the gap
     * above, so the nearest p-digit decimal may miss where the one on the other side reads back: both are tried.
     */
    private static BigDecimal shortestDecimal(double d) {
        BigDecimal exact = new BigDecimal(d);
        for (int precision = 1; precision < 17; precision++) {
            BigDecimal best = null;
            for (RoundingMode mode : new RoundingMode[] {RoundingMode.HALF_EVEN, RoundingMode.FLOOR,
                    RoundingMode.CEILING}) {
                BigDecimal candidate = exact.round(new MathContext(precision, mode));
                if (candidate.doubleValue() == d && (best == null || candidate.subtract(exact).abs()
                        .compareTo(best.subtract(exact).abs()) < 0)) {
                    best = candidate;
                }
            }
            if (best != null) {
                return best.stripTrailingZeros();
            }
        }
        // 17 significant digits always read back
        return exact.round(new MathContext(17, RoundingMode.HALF_EVEN)).stripTrailingZeros();
    }

    /** {@code datetime.strftime(format)} in the C locale, for the directives chat templates use. */
    static String strftime(LocalDateTime time, String format) {
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < format.length(); i++) {
            char c = format.charAt(i);
            if (c != '%' || i + 1 == format.length()) {
                out.append(c);
                continue;
            }
            char directive = format.charAt(++i);
            switch (directive) {
                case 'd' -> out.append(String.format("%02d", time.getDayOfMonth()));
                case 'm' -> out.append(String.format("%02d", time.getMonthValue()));
                case 'Y' -> out.append(time.getYear());
                case 'y' -> out.append(String.format("%02d", time.getYear() % 100));
                case 'b' -> out.append(time.getMonth().getDisplayName(TextStyle.SHORT, Locale.ENGLISH));
                case 'B' -> out.append(time.getMonth().getDisplayName(TextStyle.FULL, Locale.ENGLISH));
                case 'a' -> out.append(time.getDayOfWeek().getDisplayName(TextStyle.SHORT, Locale.ENGLISH));
                case 'A' -> out.append(time.getDayOfWeek().getDisplayName(TextStyle.FULL, Locale.ENGLISH));
                case 'j' -> out.append(String.format("%03d", time.getDayOfYear()));
                case 'H' -> out.append(String.format("%02d", time.getHour()));
                case 'I' -> out.append(String.format("%02d", (time.getHour() + 11) % 12 + 1));
                case 'p' -> out.append(time.getHour() < 12 ? "AM" : "PM");
                case 'M' -> out.append(String.format("%02d", time.getMinute()));
                case 'S' -> out.append(String.format("%02d", time.getSecond()));
                case 'f' -> out.append(String.format("%06d", time.getNano() / 1000));
                case 'w' -> out.append(time.getDayOfWeek().getValue() % 7);
                case '%' -> out.append('%');
                default -> throw new IllegalArgumentException("strftime_now: the directive %" + directive
                        + " is not supported; use %a %A %b %B %d %m %y %Y %j %H %I %p %M %S %f %w %%");
            }
        }
        return out.toString();
    }
}
