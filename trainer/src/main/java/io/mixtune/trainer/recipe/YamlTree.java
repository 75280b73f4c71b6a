package io.mixtune.trainer.recipe;

import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import java.io.IOException;
import java.io.Reader;
import java.io.StringReader;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Iterator;
import java.util.Map;

/**
 * A YAML document as a Jackson tree that remembers where each value was written ("recipes/x.yaml:12"), keyed by its
 * dotted path, so every later error can point at a line. Merging trees (includes, --set) keeps each value's origin.
 */
final class YamlTree {
    private static final YAMLFactory YAML = new YAMLFactory();

    final ObjectNode root;
    final Map<String, String> origins;

    private YamlTree(ObjectNode root, Map<String, String> origins) {
        this.root = root;
        this.origins = origins;
    }

    static YamlTree empty() {
        return new YamlTree(JsonNodeFactory.instance.objectNode(), new HashMap<>());
    }

    /** A YAML file, which must be UTF-8 (YAML's own rule): the first byte that is not is named by its line. */
    static YamlTree parse(Path file) {
        byte[] bytes;
        try {
            bytes = Files.readAllBytes(file);
        } catch (IOException e) {
            throw new RecipeException(file + ": cannot be read: " + e.getMessage());
        }
        ByteBuffer in = ByteBuffer.wrap(bytes);
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder().decode(in).toString();
        } catch (CharacterCodingException e) {
            int line = 1;
            for (int i = 0; i < in.position(); i++) {
                line += bytes[i] == '\n' ? 1 : 0;
            }
            throw new RecipeException(file + ":" + line + ": not UTF-8 text: a recipe is a UTF-8 YAML file (was it "
                    + "saved in another encoding?)");
        }
        return parse(new StringReader(text), file.toString());
    }

    /** @param name how errors name the source: a path, a bundled resource, or "--set" */
    static YamlTree parse(Reader reader, String name) {
        Map<String, String> origins = new HashMap<>();
        try (JsonParser parser = YAML.createParser(reader)) {
            JsonToken first = parser.nextToken();
            if (first == null) {
                return new YamlTree(JsonNodeFactory.instance.objectNode(), origins);
            }
            if (first != JsonToken.START_OBJECT) {
                throw new RecipeException(name + ":" + line(parser) + ": a recipe is a mapping of sections (model:, "
                        + "lora:, data:, train:, ...), not a " + describe(first));
            }
            return new YamlTree((ObjectNode) readValue(parser, "", name, origins), origins);
        } catch (IOException e) {
            String where = e instanceof com.fasterxml.jackson.core.JsonProcessingException p && p.getLocation() != null
                    ? ":" + p.getLocation().getLineNr() : "";
            throw new RecipeException(name + where + ": not valid YAML: " + firstLine(e.getMessage()));
        }
    }

    /** One `--set key.path=value` override; the value is read as YAML, so numbers, booleans and lists keep their type. */
    static YamlTree override(String assignment) {
        int equals = assignment.indexOf('=');
        if (equals <= 0) {
            throw new RecipeException("--set " + assignment + ": expected key.path=value, e.g. --set train.lr=1e-4");
        }
        String path = assignment.substring(0, equals).trim();
        String text = assignment.substring(equals + 1);
        JsonNode value;
        try (JsonParser parser = YAML.createParser(new StringReader("v: " + text))) {
            parser.nextToken();
            parser.nextToken();
            parser.nextToken();
            value = readValue(parser, "", "--set", new HashMap<>());
        } catch (IOException e) {
            throw new RecipeException("--set " + assignment + ": the value is not valid YAML: " + firstLine(e.getMessage()));
        }
        ObjectNode root = JsonNodeFactory.instance.objectNode();
        ObjectNode node = root;
        String[] keys = path.split("\\.");
        for (int i = 0; i < keys.length - 1; i++) {
            node = node.putObject(keys[i]);
        }
        node.set(keys[keys.length - 1], value);
        Map<String, String> origins = new HashMap<>();
        StringBuilder prefix = new StringBuilder();
        for (String key : keys) {
            prefix.append(prefix.length() == 0 ? "" : ".").append(key);
            origins.put(prefix.toString(), "--set " + assignment);
        }
        return new YamlTree(root, origins);
    }

    private static JsonNode readValue(JsonParser parser, String path, String name, Map<String, String> origins)
            throws IOException {
        JsonToken token = parser.currentToken();
        if (!path.isEmpty()) {
            origins.put(path, name + ":" + line(parser));
        }
        switch (token) {
            case START_OBJECT -> {
                ObjectNode object = JsonNodeFactory.instance.objectNode();
                while (parser.nextToken() == JsonToken.FIELD_NAME) {
                    String key = parser.currentName();
                    String childPath = path.isEmpty() ? key : path + "." + key;
                    if (object.has(key)) {
                        throw new RecipeException(name + ":" + line(parser) + ": key " + childPath + " is given twice");
                    }
                    int keyLine = line(parser);
                    parser.nextToken();
                    object.set(key, readValue(parser, childPath, name, origins));
                    origins.put(childPath, name + ":" + keyLine);
                }
                return object;
            }
            case START_ARRAY -> {
                ArrayNode array = JsonNodeFactory.instance.arrayNode();
                int index = 0;
                while (parser.nextToken() != JsonToken.END_ARRAY) {
                    array.add(readValue(parser, path + "[" + index++ + "]", name, origins));
                }
                return array;
            }
            case VALUE_STRING -> {
                return JsonNodeFactory.instance.textNode(parser.getText());
            }
            case VALUE_NUMBER_INT -> {
                return JsonNodeFactory.instance.numberNode(parser.getLongValue());
            }
            case VALUE_NUMBER_FLOAT -> {
                return JsonNodeFactory.instance.numberNode(parser.getDoubleValue());
            }
            case VALUE_TRUE, VALUE_FALSE -> {
                return JsonNodeFactory.instance.booleanNode(token == JsonToken.VALUE_TRUE);
            }
            case VALUE_NULL -> {
                return JsonNodeFactory.instance.nullNode();
            }
            default -> throw new RecipeException(name + ":" + line(parser) + ": unexpected " + describe(token));
        }
    }

    /** This tree with {@code top}'s values written over it: mappings merge key by key, anything else is replaced. */
    YamlTree overlay(YamlTree top) {
        ObjectNode merged = root.deepCopy();
        Map<String, String> mergedOrigins = new HashMap<>(origins);
        overlay(merged, top.root, "", top.origins, mergedOrigins);
        return new YamlTree(merged, mergedOrigins);
    }

    private static void overlay(ObjectNode base, ObjectNode top, String path, Map<String, String> topOrigins,
            Map<String, String> mergedOrigins) {
        Iterator<Map.Entry<String, JsonNode>> fields = top.fields();
        while (fields.hasNext()) {
            Map.Entry<String, JsonNode> field = fields.next();
            String childPath = path.isEmpty() ? field.getKey() : path + "." + field.getKey();
            JsonNode existing = base.get(field.getKey());
            if (existing instanceof ObjectNode existingObject && field.getValue() instanceof ObjectNode topObject) {
                overlay(existingObject, topObject, childPath, topOrigins, mergedOrigins);
            } else {
                base.set(field.getKey(), field.getValue().deepCopy());
                mergedOrigins.keySet().removeIf(k -> k.equals(childPath) || k.startsWith(childPath + ".")
                        || k.startsWith(childPath + "["));
                topOrigins.forEach((k, v) -> {
                    if (k.equals(childPath) || k.startsWith(childPath + ".") || k.startsWith(childPath + "[")) {
                        mergedOrigins.put(k, v);
                    }
                });
            }
            if (topOrigins.containsKey(childPath)) {
                mergedOrigins.put(childPath, topOrigins.get(childPath));
            }
        }
    }

    /** Where a dotted path was written, falling back to its closest written parent. */
    String originOf(String path) {
        String p = path;
        while (!p.isEmpty()) {
            String origin = origins.get(p);
            if (origin != null) {
                return origin;
            }
            int cut = Math.max(p.lastIndexOf('.'), p.lastIndexOf('['));
            p = cut < 0 ? "" : p.substring(0, cut);
        }
        return "recipe";
    }

    private static int line(JsonParser parser) {
        JsonLocation location = parser.currentTokenLocation();
        return location == null ? 0 : location.getLineNr();
    }

    private static String describe(JsonToken token) {
        return switch (token) {
            case START_ARRAY -> "list";
            case START_OBJECT -> "mapping";
            case VALUE_STRING -> "string";
            case VALUE_NUMBER_INT, VALUE_NUMBER_FLOAT -> "number";
            default -> token.asString() == null ? token.name().toLowerCase() : token.asString();
        };
    }

    private static String firstLine(String message) {
        return message == null ? "" : message.split("\n")[0];
    }
}
