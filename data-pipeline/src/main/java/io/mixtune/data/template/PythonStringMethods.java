package io.mixtune.data.template;

import com.hubspot.jinjava.el.JinjavaInterpreterResolver;
import java.beans.FeatureDescriptor;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Locale;
import jinjava.javax.el.CompositeELResolver;
import jinjava.javax.el.ELContext;
import jinjava.javax.el.ELResolver;

/**
 * Python's {@code str} methods and indexing on strings, as jinja2 templates call them ({@code content.split('</think>')
 * [-1]}, {@code .strip()}, {@code .startswith(...)}, {@code s[0]}), ahead of Jinjava's resolver, which would call the
 * Java method of that name ({@code split} takes a regex and drops trailing empty parts) or none, and index a string as
 * nothing. Every other call and property goes to Jinjava's own resolver.
 */
final class PythonStringMethods extends CompositeELResolver {
    PythonStringMethods() {
        add(new Strings());
        add(JinjavaInterpreterResolver.DEFAULT_RESOLVER_READ_ONLY);
    }

    private static final class Strings extends ELResolver {
        @Override
        public Object invoke(ELContext context, Object base, Object method, Class<?>[] types, Object[] params) {
            if (!(base instanceof String s) || method == null) {
                return null;
            }
            Object result = call(s, method.toString(), params == null ? new Object[0] : params);
            if (result != NOT_A_METHOD) {
                context.setPropertyResolved(true);
                return result;
            }
            return null;
        }

        @Override
        public Object getValue(ELContext context, Object base, Object property) {
            // Jinjava hands a subscript over as its text: s[0] as "0"
            if (base instanceof String s && property != null && INDEX.matcher(property.toString()).matches()) {
                int n = Integer.parseInt(property.toString());
                int index = n < 0 ? s.length() + n : n;
                if (index < 0 || index >= s.length()) {
                    throw new IllegalArgumentException("string index " + n + " out of range for a string of "
                            + s.length() + " characters");
                }
                context.setPropertyResolved(true);
                return String.valueOf(s.charAt(index));
            }
            return null;
        }

        @Override
        public Class<?> getCommonPropertyType(ELContext context, Object base) {
            return null;
        }

        @Override
        public Iterator<FeatureDescriptor> getFeatureDescriptors(ELContext context, Object base) {
            return null;
        }

        @Override
        public Class<?> getType(ELContext context, Object base, Object property) {
            return null;
        }

        @Override
        public boolean isReadOnly(ELContext context, Object base, Object property) {
            return true;
        }

        @Override
        public void setValue(ELContext context, Object base, Object property, Object value) {}
    }

    private static final Object NOT_A_METHOD = new Object();
    private static final java.util.regex.Pattern INDEX = java.util.regex.Pattern.compile("-?[0-9]{1,9}");

    /** {@code s.method(*params)} in Python, or {@link #NOT_A_METHOD}. */
    static Object call(String s, String method, Object[] params) {
        return switch (method) {
            case "strip" -> PythonBuiltins.strip(s, chars(params));
            case "lstrip" -> lstrip(s, chars(params));
            case "rstrip" -> rstrip(s, chars(params));
            case "split" -> split(s, params.length > 0 ? params[0] : null, params.length > 1
                    ? ((Number) params[1]).intValue() : -1);
            case "startswith" -> affix(s, params, true);
            case "endswith" -> affix(s, params, false);
            case "upper" -> s.toUpperCase(Locale.ROOT);
            case "lower" -> s.toLowerCase(Locale.ROOT);
            case "replace" -> replace(s, string(params, 0), string(params, 1), params.length > 2
                    ? ((Number) params[2]).intValue() : -1);
            case "find" -> (long) s.indexOf(string(params, 0));
            case "count" -> count(s, string(params, 0));
            case "title" -> title(s);
            case "capitalize" -> s.isEmpty() ? s : s.substring(0, 1).toUpperCase(Locale.ROOT)
                    + s.substring(1).toLowerCase(Locale.ROOT);
            default -> NOT_A_METHOD;
        };
    }

    private static String chars(Object[] params) {
        return params.length > 0 && params[0] != null ? params[0].toString() : null;
    }

    private static String string(Object[] params, int i) {
        if (params.length <= i || params[i] == null) {
            throw new IllegalArgumentException("the string method needs argument " + (i + 1));
        }
        return params[i].toString();
    }

    private static String lstrip(String s, String chars) {
        return PythonBuiltins.strip(s, chars, true, false);
    }

    private static String rstrip(String s, String chars) {
        return PythonBuiltins.strip(s, chars, false, true);
    }

    /** {@code str.split(sep, maxsplit)}: runs of whitespace, edges dropped, where sep is None; else every sep. */
    static List<String> split(String s, Object separator, int maxSplit) {
        List<String> parts = new ArrayList<>();
        if (separator == null) {
            int i = 0;
            while (i < s.length()) {
                while (i < s.length() && PythonBuiltins.isSpace(s.charAt(i))) {
                    i++;
                }
                if (i == s.length()) {
                    break;
                }
                if (maxSplit >= 0 && parts.size() == maxSplit) {
                    parts.add(rstrip(s.substring(i), null));
                    return parts;
                }
                int start = i;
                while (i < s.length() && !PythonBuiltins.isSpace(s.charAt(i))) {
                    i++;
                }
                parts.add(s.substring(start, i));
            }
            return parts;
        }
        String sep = separator.toString();
        if (sep.isEmpty()) {
            throw new IllegalArgumentException("split: empty separator");
        }
        int start = 0;
        for (int at = s.indexOf(sep); at >= 0 && (maxSplit < 0 || parts.size() < maxSplit); at = s.indexOf(sep,
                start)) {
            parts.add(s.substring(start, at));
            start = at + sep.length();
        }
        parts.add(s.substring(start));
        return parts;
    }

    private static boolean affix(String s, Object[] params, boolean prefix) {
        Object what = params.length > 0 ? params[0] : null;
        Iterable<?> candidates = what instanceof Iterable<?> many ? many : List.of(string(params, 0));
        for (Object candidate : candidates) {
            if (prefix ? s.startsWith(candidate.toString()) : s.endsWith(candidate.toString())) {
                return true;
            }
        }
        return false;
    }

    private static String replace(String s, String old, String replacement, int count) {
        if (count < 0) {
            return s.replace(old, replacement);
        }
        StringBuilder out = new StringBuilder();
        int start = 0;
        for (int n = 0; n < count; n++) {
            int at = s.indexOf(old, start);
            if (at < 0) {
                break;
            }
            out.append(s, start, at).append(replacement);
            start = at + old.length();
            if (old.isEmpty()) {
                if (start >= s.length()) {
                    break;
                }
                out.append(s.charAt(start++));
            }
        }
        return out.append(s.substring(start)).toString();
    }

    private static long count(String s, String part) {
        if (part.isEmpty()) {
            return s.length() + 1L;
        }
        long n = 0;
        for (int at = s.indexOf(part); at >= 0; at = s.indexOf(part, at + part.length())) {
            n++;
        }
        return n;
    }

    private static String title(String s) {
        StringBuilder out = new StringBuilder(s.length());
        boolean previousCased = false;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            out.append(previousCased ? Character.toLowerCase(c) : Character.toUpperCase(c));
            previousCased = Character.isLetter(c);
        }
        return out.toString();
    }
}
