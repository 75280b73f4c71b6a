package io.mixtune.trainer.recipe;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import io.mixtune.lora.adapter.LoraInit;
import io.mixtune.merging.NearestName;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.lang.reflect.Type;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Binds a YAML tree onto records, one key per record component (snake_case of its name), so recipe sections stay plain
 * records. Every error names the file:line the value came from, the dotted key, and what was expected; an unknown key
 * also names the nearest valid one.
 */
final class RecordBinder {
    /** What a value that could not be bound becomes, so binding goes on and reports the next problem too. */
    private static final Object FAILED = new Object();

    private final YamlTree tree;
    private final String recipeName;
    private final List<String> problems = new ArrayList<>();
    private final List<String> warnings = new ArrayList<>();
    private final Map<String, Object> bound = new HashMap<>();

    /** @param recipeName the recipe file, where a problem with a key that no file the user wrote sets is reported */
    RecordBinder(YamlTree tree, String recipeName) {
        this.tree = tree;
        this.recipeName = recipeName;
    }

    /** The record bound from {@code node}, or null when it or a value in it could not be (see {@link #problems}). */
    <T> T bind(Class<T> type, JsonNode node, String path) {
        Object value = bindRecord(type, node, path);
        return value == FAILED ? null : type.cast(value);
    }

    /** The section bound at {@code path} (such as "data"), or null when it could not be bound. */
    <T> T section(String path, Class<T> type) {
        Object value = bound.get(path);
        return type.isInstance(value) ? type.cast(value) : null;
    }

    private Object bindRecord(Class<?> type, JsonNode node, String path) {
        if (!type.isRecord()) {
            throw new IllegalArgumentException(type + " is not a record");
        }
        RecordComponent[] components = type.getRecordComponents();
        List<String> keys = Arrays.stream(components).map(c -> snakeCase(c.getName())).toList();
        if (!node.isObject()) {
            problem(path, "expected a mapping with keys " + keys + ", got " + describe(node));
            return FAILED;
        }
        Iterator<String> names = node.fieldNames();
        while (names.hasNext()) {
            String key = names.next();
            String notOffered = Recipe.NOT_OFFERED.getOrDefault(join(path, key), GrpoConfig.NOT_OFFERED.getOrDefault(
                    join(path, key), Distillation.NOT_OFFERED.getOrDefault(join(path, key),
                            RlooConfig.NOT_OFFERED.get(join(path, key)))));
            if (!keys.contains(key) && notOffered != null) {
                problem(join(path, key), "not offered: " + notOffered);
            } else if (!keys.contains(key)) {
                problem(join(path, key), "unknown key" + nearest(key, keys) + " (valid keys"
                        + (path.isEmpty() ? "" : " under " + path) + ": " + String.join(", ", keys) + ")");
            }
        }
        Object[] values = new Object[components.length];
        Class<?>[] types = new Class<?>[components.length];
        List<String> failedKeys = new ArrayList<>();
        for (int i = 0; i < components.length; i++) {
            types[i] = components[i].getType();
            JsonNode child = node.get(keys.get(i));
            values[i] = value(components[i].getGenericType(), child, join(path, keys.get(i)));
            if (values[i] == FAILED) {
                failedKeys.add(keys.get(i));
                values[i] = neutral(types[i]);
            }
        }
        try {
            Object record = type.getDeclaredConstructor(types).newInstance(values);
            if (!failedKeys.isEmpty()) {
                return FAILED;
            }
            bound.put(path, record);
            return record;
        } catch (InvocationTargetException e) {
            Throwable cause = e.getCause();
            if (failedKeys.isEmpty() && cause instanceof RecipeException recipe) {
                problems.addAll(recipe.problems());
                return FAILED;
            }
            if (cause instanceof IllegalArgumentException) {
                // A constructor names the key first ("lr: must lie in (0, 1)"); one that checks all its keys before
                // throwing hands the others on as suppressed exceptions.
                constructorProblem(path, keys, failedKeys, cause.getMessage());
                for (Throwable more : cause.getSuppressed()) {
                    constructorProblem(path, keys, failedKeys, more.getMessage());
                }
                return FAILED;
            }
            if (failedKeys.isEmpty()) {
                throw new IllegalStateException(cause);
            }
            return FAILED; // a constructor that could not take the stand-ins: its values' own problems are reported
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * What stands in for a value that could not be bound, so that the record's constructor still checks its other
     * keys (a missing output_dir is reported beside a bad train.lr); its problems with the stand-ins are dropped.
     */
    private static Object neutral(Class<?> type) {
        if (type == boolean.class) {
            return false;
        }
        if (type == int.class) {
            return 0;
        }
        if (type == long.class) {
            return 0L;
        }
        if (type == double.class) {
            return 0.0;
        }
        return null;
    }

    private void constructorProblem(String path, List<String> keys, List<String> failedKeys, String message) {
        int colon = message.indexOf(": ");
        String key = colon > 0 ? message.substring(0, colon) : null;
        if (key != null && keys.contains(key)) {
            if (!failedKeys.contains(key)) {
                problem(join(path, key), message.substring(colon + 2));
            }
        } else if (failedKeys.isEmpty()) {
            problem(path, message);
        }
    }

    private Object value(Type type, JsonNode node, String path) {
        Class<?> raw = type instanceof ParameterizedType p ? (Class<?>) p.getRawType() : (Class<?>) type;
        if (node == null || node.isNull()) {
            if (raw.isPrimitive()) {
                problem(path, "missing: expected " + expected(raw));
                return FAILED;
            }
            if (raw == List.class) {
                return List.of();
            }
            if (raw == Map.class) {
                return Map.of();
            }
            return null;
        }
        if (raw == LoraInit.class) {
            // PEFT's init_lora_weights: true, or the name of an initialisation
            if (!node.isValueNode()) {
                problem(path, "expected true or an initialisation's name, got " + describe(node));
                return FAILED;
            }
            try {
                return LoraInit.parse(node.asText());
            } catch (IllegalArgumentException e) {
                problem(path, e.getMessage());
                return FAILED;
            }
        }
        if (raw == String.class) {
            if (!node.isValueNode() || node.isBoolean()) {
                problem(path, "expected a string, got " + describe(node));
                return FAILED;
            }
            return node.asText();
        }
        if (raw == int.class || raw == Integer.class || raw == long.class || raw == Long.class) {
            if (!node.canConvertToLong() || !node.isIntegralNumber()) {
                problem(path, "expected an integer, got " + describe(node));
                return FAILED;
            }
            if ((raw == int.class || raw == Integer.class) && !node.canConvertToInt()) {
                problem(path, "expected an integer below 2^31, got " + node.asText());
                return FAILED;
            }
            return raw == int.class || raw == Integer.class ? (Object) node.intValue() : (Object) node.longValue();
        }
        if (raw == double.class || raw == Double.class) {
            if (node.isNumber()) {
                return node.doubleValue();
            }
            // YAML 1.1 reads 1e-4 (no dot) as a string; take it as the number the author meant.
            if (node.isTextual()) {
                try {
                    return Double.parseDouble(node.asText().trim());
                } catch (NumberFormatException e) {
                    // fall through
                }
            }
            problem(path, "expected a number, got " + describe(node));
            return FAILED;
        }
        if (raw == boolean.class || raw == Boolean.class) {
            if (!node.isBoolean()) {
                problem(path, "expected true or false, got " + describe(node));
                return FAILED;
            }
            return node.booleanValue();
        }
        if (raw == List.class) {
            Type element = ((ParameterizedType) type).getActualTypeArguments()[0];
            JsonNode array = node;
            if (!node.isArray()) {
                if (!node.isValueNode()) {
                    problem(path, "expected a list, got " + describe(node));
                    return FAILED;
                }
                array = new ArrayNode(null, List.of(node)); // a single value stands for a list of one
            }
            List<Object> list = new ArrayList<>();
            for (int i = 0; i < array.size(); i++) {
                list.add(value(element, array.get(i), path + "[" + i + "]"));
            }
            return list.contains(FAILED) ? FAILED : List.copyOf(list);
        }
        if (raw == Map.class) {
            Type valueType = ((ParameterizedType) type).getActualTypeArguments()[1];
            if (!node.isObject()) {
                problem(path, "expected a mapping, got " + describe(node));
                return FAILED;
            }
            Map<String, Object> map = new LinkedHashMap<>();
            node.fields().forEachRemaining(e -> map.put(e.getKey(), value(valueType, e.getValue(), join(path, e.getKey()))));
            return map.containsValue(FAILED) ? FAILED : map;
        }
        if (raw.isRecord()) {
            return bindRecord(raw, node, path);
        }
        throw new IllegalStateException("recipes cannot hold a " + type);
    }

    /** Records a problem with the value at {@code path}, reported where the user set it. */
    void problem(String path, String message) {
        problems.add(located(path) + message);
    }

    /**
     * A problem between two values (a warmup longer than the run): reported at whichever of the two the user set, and
     * naming both, each with its value and where it was set or that it is a default.
     *
     * @param relation what {@code path}'s value does to {@code other}'s, such as "exceeds"
     */
    void conflict(String path, String relation, String other, String why) {
        problems.add(describeConflict(path, relation, other, why));
    }

    /** A value worth saying but not worth stopping for, reported where the user set it. */
    void warning(String path, String message) {
        warnings.add(located(path) + message);
    }

    /** A conflict worth saying but not worth stopping for (a one-step smoke test of a recipe with a warmup). */
    void warnConflict(String path, String relation, String other, String why) {
        warnings.add(describeConflict(path, relation, other, why));
    }

    private String describeConflict(String path, String relation, String other, String why) {
        String where = userOrigin(path);
        if (where == null) {
            where = userOrigin(other);
        }
        where = where == null ? recipeName : where;
        return where + ": " + describeKey(path, where) + " " + relation + " " + describeKey(other, where) + ": " + why;
    }

    List<String> problems() {
        return List.copyOf(problems);
    }

    List<String> warnings() {
        return List.copyOf(warnings);
    }

    /** Throws every problem found so far at once, in the order of the lines they point at, file by file. */
    void throwIfAny() {
        if (problems.isEmpty()) {
            return;
        }
        List<String> files = new ArrayList<>();
        List<String> sorted = new ArrayList<>(problems);
        sorted.sort(Comparator.comparingInt((String problem) -> {
            Matcher at = FILE_LINE.matcher(problem);
            String file = at.lookingAt() ? at.group(1) : "";
            if (!files.contains(file)) {
                files.add(file);
            }
            return files.indexOf(file);
        }).thenComparingInt(problem -> {
            Matcher at = FILE_LINE.matcher(problem);
            return at.lookingAt() ? Integer.parseInt(at.group(2)) : 0;
        }));
        throw new RecipeException(sorted);
    }

    private static final Pattern FILE_LINE = Pattern.compile("(.+?):(\\d+): ");

    /**
     * "file:line: key: " where the user wrote the key; for a value that came from the bundled defaults, the closest
     * section the user wrote (else the recipe) and the default, so nobody is sent to edit configs/recipe-defaults.yaml.
     */
    String located(String path) {
        String origin = userOrigin(path);
        if (origin != null) {
            return origin + ": " + path + ": ";
        }
        String parent = path;
        String where = null;
        while (where == null && !parent.isEmpty()) {
            int cut = Math.max(parent.lastIndexOf('.'), parent.lastIndexOf('['));
            parent = cut < 0 ? "" : parent.substring(0, cut);
            where = parent.isEmpty() ? null : userOrigin(parent);
        }
        return (where == null ? recipeName : where) + ": " + path + " (not set; the default is " + valueAt(path)
                + "): ";
    }

    /** The keys of {@code section} the user set (in a recipe, an include, --set), in the merged tree's order. */
    List<String> userSetKeys(String section) {
        List<String> keys = new ArrayList<>();
        JsonNode node = tree.root.get(section);
        if (node != null) {
            node.fieldNames().forEachRemaining(key -> {
                if (userOrigin(section + "." + key) != null) {
                    keys.add(key);
                }
            });
        }
        return keys;
    }

    /** Whether the user set the value at {@code path} (a recipe, an include, --set) rather than left its default. */
    boolean userSet(String path) {
        return userOrigin(path) != null;
    }

    /** Where the user set the value at {@code path} (a recipe, an include, --set), or null for a default. */
    private String userOrigin(String path) {
        String origin = tree.originOf(path);
        return origin.startsWith(RecipeReader.DEFAULTS + ":") || origin.equals("recipe") ? null : origin;
    }

    /** "train.max_steps 20 (set at recipe.yaml:12)", or "train.warmup_steps (default 100)". */
    private String describeKey(String path, String reportedAt) {
        String origin = userOrigin(path);
        if (origin == null) {
            return path + " (default " + valueAt(path) + ")";
        }
        return path + " " + valueAt(path) + (origin.equals(reportedAt) ? "" : " (set at " + origin + ")");
    }

    /** The merged value at a dotted path, as YAML shows it. */
    private String valueAt(String path) {
        JsonNode node = tree.root;
        for (String key : path.split("\\.")) {
            node = node == null ? null : node.get(key);
        }
        if (node == null || node.isNull()) {
            return "null";
        }
        return node.isTextual() ? node.asText() : node.toString();
    }

    static String snakeCase(String camel) {
        StringBuilder out = new StringBuilder();
        for (char c : camel.toCharArray()) {
            if (Character.isUpperCase(c)) {
                out.append('_').append(Character.toLowerCase(c));
            } else {
                out.append(c);
            }
        }
        return out.toString();
    }

    private static String join(String path, String key) {
        return path.isEmpty() ? key : path + "." + key;
    }

    private static String expected(Class<?> type) {
        if (type == int.class || type == long.class) {
            return "an integer";
        }
        return type == boolean.class ? "true or false" : "a number";
    }

    private static String describe(JsonNode node) {
        if (node.isObject()) {
            return "a mapping";
        }
        if (node.isArray()) {
            return "a list";
        }
        return node.isTextual() ? "\"" + node.asText() + "\"" : node.toString();
    }

    /** " (did you mean X?)" when a valid key is close to the typed one. */
    static String nearest(String key, List<String> valid) {
        String best = NearestName.nearest(key, valid);
        return best == null ? "" : " (did you mean " + best + "?)";
    }
}
