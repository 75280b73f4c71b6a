package io.mixtune.merging.gguf;

import java.util.Map;
import java.util.regex.Pattern;
import java.util.regex.PatternSyntaxException;

/**
 * A regular expression as llama-quantize's --tensor-type compiles it (src/llama-quant.cpp quantize_state_impl:
 * {@code std::regex(pattern)}, libstdc++'s ECMAScript grammar), read into the java.util.regex pattern that finds the
 * same tensor names. The two grammars agree on what these patterns are made of (literals, {@code .}, classes,
 * {@code \d \s \w \b}, groups, alternatives, greedy and lazy quantifiers, anchors) and differ where Java would
 * silently find other names: a POSIX class {@code [[:digit:]]} (Java reads the characters {@code :digt}), an escaped
 * letter ECMAScript does not define ({@code \h}, {@code \Q}, {@code \z}: libstdc++ takes the letter itself, Java a
 * class or a quote), {@code &&} and {@code [} inside a class (Java: intersection, union), {@code \0} and {@code \v}.
 * Those are translated; what has no translation (a {@code +} after a quantifier: libstdc++ repeats, Java is
 * possessive; an empty class {@code []}; collating elements {@code [.a.]}, {@code [=a=]}) is refused, as are the
 * {@code (?...)} groups other than {@code (?: (?= (?!}, which libstdc++ refuses.
 */
final class EcmaScriptRegex {
    /** The class names libstdc++'s regex_traits::lookup_classname knows, as Java's POSIX classes (US-ASCII). */
    private static final Map<String, String> CLASSES = Map.ofEntries(Map.entry("alnum", "\\p{Alnum}"),
            Map.entry("alpha", "\\p{Alpha}"), Map.entry("blank", "\\p{Blank}"), Map.entry("cntrl", "\\p{Cntrl}"),
            Map.entry("digit", "\\p{Digit}"), Map.entry("d", "\\p{Digit}"), Map.entry("graph", "\\p{Graph}"),
            Map.entry("lower", "\\p{Lower}"), Map.entry("print", "\\p{Print}"), Map.entry("punct", "\\p{Punct}"),
            Map.entry("space", "\\p{Space}"), Map.entry("s", "\\p{Space}"), Map.entry("upper", "\\p{Upper}"),
            Map.entry("xdigit", "\\p{XDigit}"), Map.entry("w", "\\w"));
    /** ECMAScript's escaped letters that mean the same in Java ({@code \b} outside a class). */
    private static final String SAME_ESCAPES = "dDsSwWbBfnrtxuc";

    private EcmaScriptRegex() {}

    /**
     * @param option the option and value, for the error
     * @throws IllegalArgumentException naming {@code option}, for a pattern libstdc++ refuses or one read otherwise
     */
    static Pattern compile(String ecmaScript, String option) {
        StringBuilder java = new StringBuilder();
        boolean inClass = false;
        boolean classStart = false;
        boolean afterQuantifier = false;
        int i = 0;
        while (i < ecmaScript.length()) {
            char c = ecmaScript.charAt(i);
            boolean quantifier = false;
            if (c == '\\') {
                if (i + 1 == ecmaScript.length()) {
                    throw refused(option, "ends in a lone \\");
                }
                char escaped = ecmaScript.charAt(i + 1);
                if (escaped == '0') {
                    java.append("\\x00");
                } else if (escaped == 'v') {
                    java.append("\\x0B"); // Java's \v is a class of vertical white space
                } else if (escaped == 'b' && inClass) {
                    java.append("\\x08"); // a backspace in an ECMAScript class
                } else if (Character.isLetterOrDigit(escaped) && SAME_ESCAPES.indexOf(escaped) < 0
                        && !(escaped >= '1' && escaped <= '9')) {
                    java.append(Pattern.quote(String.valueOf(escaped))); // libstdc++: the letter itself
                } else {
                    java.append(c).append(escaped);
                }
                classStart = false;
                i += 2;
            } else if (inClass) {
                if (c == ']' && classStart) {
                    throw refused(option, "has an empty class [] or [^]; write (?!) or [\\s\\S] as a group instead");
                } else if (c == ']') {
                    java.append(c);
                    inClass = false;
                } else if (c == '[' && i + 1 < ecmaScript.length() && ecmaScript.charAt(i + 1) == ':') {
                    int end = ecmaScript.indexOf(":]", i + 2);
                    String name = end < 0 ? null : CLASSES.get(ecmaScript.substring(i + 2, end));
                    if (name == null) {
                        throw refused(option, "has an unknown character class at " + ecmaScript.substring(i));
                    }
                    java.append(name);
                    i = end + 1;
                } else if (c == '[' && i + 1 < ecmaScript.length() && ".=".indexOf(ecmaScript.charAt(i + 1)) >= 0) {
                    throw refused(option, "has a collating element or equivalence class (" + ecmaScript.substring(i)
                            + "), which mixtune does not read");
                } else if (c == '[' || c == '&') {
                    java.append('\\').append(c); // literal in ECMAScript; union or intersection in Java
                } else {
                    java.append(c);
                }
                classStart = false;
                i++;
            } else {
                if (c == '[') {
                    inClass = true;
                    classStart = true;
                    java.append(c);
                    if (i + 1 < ecmaScript.length() && ecmaScript.charAt(i + 1) == '^') {
                        java.append('^');
                        i++;
                    }
                } else if (c == '(' && i + 1 < ecmaScript.length() && ecmaScript.charAt(i + 1) == '?'
                        && (i + 2 == ecmaScript.length() || ":=!".indexOf(ecmaScript.charAt(i + 2)) < 0)) {
                    throw refused(option, "has a (?...) group other than (?:, (?= and (?!, which llama-quantize's"
                            + " std::regex refuses");
                } else if (c == '+' && afterQuantifier) {
                    throw refused(option, "has a + after a quantifier, which llama-quantize's std::regex repeats and"
                            + " Java makes possessive; write the quantifier once");
                } else {
                    quantifier = c == '*' || c == '+' || c == '?' || c == '}';
                    java.append(c);
                }
                i++;
            }
            afterQuantifier = quantifier;
        }
        try {
            return Pattern.compile(java.toString());
        } catch (PatternSyntaxException e) {
            throw refused(option, "is not a regular expression: " + e.getDescription());
        }
    }

    private static IllegalArgumentException refused(String option, String why) {
        return new IllegalArgumentException(option + ": the tensor name pattern " + why);
    }
}
