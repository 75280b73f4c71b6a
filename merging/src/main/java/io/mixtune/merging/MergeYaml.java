package io.mixtune.merging;

import com.fasterxml.jackson.annotation.JsonProperty;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.DeserializationContext;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import com.fasterxml.jackson.databind.JsonDeserializer;
import com.fasterxml.jackson.databind.JsonMappingException;
import com.fasterxml.jackson.databind.JsonSerializer;
import com.fasterxml.jackson.databind.SerializerProvider;
import com.fasterxml.jackson.databind.exc.UnrecognizedPropertyException;
import com.fasterxml.jackson.databind.exc.ValueInstantiationException;
import com.fasterxml.jackson.databind.module.SimpleModule;
import com.fasterxml.jackson.dataformat.yaml.YAMLFactory;
import com.fasterxml.jackson.dataformat.yaml.YAMLGenerator;
import com.fasterxml.jackson.dataformat.yaml.YAMLMapper;
import io.mixtune.model.config.ModelConfig;
import io.mixtune.model.safetensors.DType;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.reflect.ParameterizedType;
import java.lang.reflect.RecordComponent;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Reads and writes {@link MergeConfig} as YAML. A mistake is reported as {@code file:line:column: key: problem}, an
 * unknown key with the nearest valid one ("did you mean 'merge_method'?"), so a typo in a long config is one glance.
 */
public final class MergeYaml {
    /** The resolved config written next to a merged model, as mergekit writes mergekit_config.yml. */
    public static final String RESOLVED_FILE = "mixtune_merge.yaml";

    static final YAMLMapper MAPPER = mapper();

    private MergeYaml() {}

    public static MergeConfig read(Path file) {
        return read(file, null);
    }

    /**
     * @param out the output directory from the command line, as mergekit-yaml takes it (its files have no out key);
     *     null when the file says it
     */
    public static MergeConfig read(Path file, Path out) {
        String text;
        try {
            text = Files.readString(file);
        } catch (NoSuchFileException e) {
            throw new IllegalArgumentException(file + ": no such merge config file");
        } catch (IOException e) {
            throw new UncheckedIOException(file + ": cannot be read: " + e.getMessage(), e);
        }
        try {
            JsonNode tree = MAPPER.readTree(text);
            requireSupported(file, text, tree);
            boolean tokenizerKey = tree != null && tree.isObject() && tree.has("tokenizer");
            if (tokenizerKey) {
                tree = withTokenizerSource(file, text, (ObjectNode) tree);
            }
            boolean modulesKey = tree != null && tree.isObject() && tree.has("modules");
            if (modulesKey) {
                tree = MergekitModules.flattened(file, text, (ObjectNode) tree);
            }
            if (out != null && tree != null && tree.has("out")) {
                throw new IllegalArgumentException(file + where(text, "out") + ": out is given twice, in the file and on"
                        + " the command line (" + out + "); give it once");
            }
            MergeConfig config;
            if (tree != null && tree.has("slices")) {
                ObjectNode models = MergekitSlices.asModels(file, (ObjectNode) tree);
                if (out != null) {
                    models.put("out", out.toString());
                }
                requireKnownKeys(file, text, models, MergeConfig.class, "");
                config = MAPPER.treeToValue(models, MergeConfig.class);
            } else if (tokenizerKey || modulesKey) {
                // Read from the edited tree: the file's text says tokenizer or modules, the record tokenizer_source
                // and models.
                ObjectNode edited = (ObjectNode) tree;
                if (out != null) {
                    edited.put("out", out.toString());
                }
                requireKnownKeys(file, text, edited, MergeConfig.class, "");
                config = MAPPER.treeToValue(edited, MergeConfig.class);
            } else {
                requireKnownKeys(file, text, tree, MergeConfig.class, "");
                config = MAPPER.readValue(withOut(text, tree, out), MergeConfig.class);
            }
            if (config == null) {
                throw new IllegalArgumentException(file + ": empty; expected merge_method, models and out");
            }
            return config;
        } catch (JsonProcessingException e) {
            throw new IllegalArgumentException(describe(file, text, e), e);
        }
    }

    /**
     * The text with the command line's out appended as one more top-level key: parsing the text itself, not a tree
     * edited from it, keeps the line of every problem in the file. A flow-style {...} file is rare; it gets its out
     * through the tree, without lines.
     */
    private static String withOut(String text, JsonNode tree, Path out) throws JsonProcessingException {
        if (out == null) {
            return text;
        }
        ObjectNode edited = tree != null && tree.isObject() ? (ObjectNode) tree.deepCopy() : MAPPER.createObjectNode();
        if (tree == null || text.strip().startsWith("{")) {
            return MAPPER.writeValueAsString(edited.put("out", out.toString()));
        }
        return text + "\nout: " + new com.fasterxml.jackson.databind.ObjectMapper().writeValueAsString(out.toString())
                + "\n";
    }

    /**
     * mergekit's {@code tokenizer: {source: ...}}, which plan.py reads as tokenizer_source (its other keys build
     * embeddings for tokens a model lacks, which mixtune cannot: it merges models that share one vocabulary).
     */
    private static ObjectNode withTokenizerSource(Path file, String text, ObjectNode tree) {
        String at = file + where(text, "tokenizer");
        if (tree.has("tokenizer_source")) {
            throw new IllegalArgumentException(at + ": give tokenizer or tokenizer_source, not both (as mergekit)");
        }
        JsonNode tokenizer = tree.get("tokenizer");
        if (!tokenizer.isObject()) {
            throw new IllegalArgumentException(at + ": tokenizer must be a mapping with source (base or a model),"
                    + " got " + tokenizer);
        }
        for (Map.Entry<String, JsonNode> entry : tokenizer.properties()) {
            String key = entry.getKey();
            if (key.equals("tokens") || key.equals("pad_to_multiple_of")) {
                throw new IllegalArgumentException("not supported yet: " + file + where(text, key) + ": tokenizer."
                        + key + " (" + (key.equals("tokens") ? "embeddings for chosen tokens" : "a vocabulary padded"
                        + " to a multiple") + "): mixtune merges models that share one vocabulary and cannot rebuild"
                        + " embeddings");
            }
            if (!key.equals("source")) {
                throw new IllegalArgumentException(at + ": tokenizer." + key + " is not a key of mergekit's tokenizer"
                        + " (source, tokens, pad_to_multiple_of)");
            }
        }
        // mergekit's default source is union.
        JsonNode source = tokenizer.has("source") ? tokenizer.get("source") : MAPPER.getNodeFactory().textNode("union");
        if (!source.isTextual()) {
            throw new IllegalArgumentException(at + ": tokenizer.source must be base or a model's path, got " + source);
        }
        ObjectNode edited = tree.deepCopy();
        edited.remove("tokenizer");
        edited.set("tokenizer_source", source);
        return edited;
    }

    /** A mergekit merge method mixtune lacks, named as such with the keys and methods mixtune reads. */
    private static void requireSupported(Path file, String text, JsonNode tree) {
        if (tree == null || !tree.isObject()) {
            return;
        }
        JsonNode method = tree.path("merge_method");
        if (method.isTextual() && MergeMethod.MERGEKIT_ONLY.contains(method.asText())) {
            throw new IllegalArgumentException("not supported yet: " + file + where(text, "merge_method")
                    + ": merge_method '" + method.asText() + "'"
                    + ". mixtune reads mergekit's merge_method (" + String.join(", ", MergeMethod.names()) + "),"
                    + " base_model, models, slices or modules: {default: ...}, parameters (numbers, gradients,"
                    + " filters),"
                    + " dtype, out_dtype, tokenizer_source or tokenizer.source, and chat_template");
        }
    }

    /** ":line:column" of {@code key:} if it occurs once in the text, else "". */
    static String where(String text, String key) {
        String at = uniqueKeyPosition(text, key);
        return at == null ? "" : ":" + at;
    }

    public static void write(MergeConfig config, Path file) throws IOException {
        MAPPER.writeValue(file.toFile(), written(config));
    }

    static String toYaml(MergeConfig config) {
        try {
            return MAPPER.writeValueAsString(written(config));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The config as a file says it: with slices, its models are the slices' (mergekit takes one or the other). */
    private static JsonNode written(MergeConfig config) {
        ObjectNode tree = MAPPER.valueToTree(config);
        if (config.slices() != null) {
            tree.remove("models");
        }
        return tree;
    }

    static String describe(Path file, String text, JsonProcessingException e) {
        JsonLocation at = e.getLocation();
        String where = file + (at == null ? "" : ":" + at.getLineNr() + ":" + at.getColumnNr());
        if (e instanceof ValueInstantiationException invalid) {
            // A record checks itself once its mapping has ended, where Jackson points (past the end of the file when
            // the command line's out was appended): point at the key the message names instead, or at no line.
            String keyAt = keyPosition(text, pointer(invalid), invalid.getCause() == null ? ""
                    : invalid.getCause().getMessage());
            where = file + (keyAt == null ? "" : ":" + keyAt);
        }
        if (e instanceof UnrecognizedPropertyException unknown) {
            // Records are built once their mapping ends, so Jackson reports an unknown key there; point at the key.
            String keyAt = uniqueKeyPosition(text, unknown.getPropertyName());
            where = keyAt == null ? where : file + ":" + keyAt;
        }
        if (e instanceof UnrecognizedPropertyException unknown) {
            Set<String> valid = new TreeSet<>();
            unknown.getKnownPropertyIds().forEach(id -> valid.add(id.toString()));
            String key = unknown.getPropertyName();
            String path = path(unknown, true);
            return where + ": unknown key '" + key + "'" + (path.isEmpty() ? "" : " in " + path)
                    + NearestName.suggestion(key, valid) + "; valid keys here: " + String.join(", ", valid);
        }
        String problem = e.getCause() instanceof IllegalArgumentException invalid ? invalid.getMessage() : e.getOriginalMessage();
        String path = e instanceof JsonMappingException mapping ? path(mapping, false) : "";
        return where + ": " + (path.isEmpty() ? "" : path + ": ") + problem.replace('\n', ' ');
    }

    /**
     * Unknown keys first: the records validate themselves as soon as their mapping ends, so a misspelt
     * {@code merge_mehtod} would otherwise be reported as a missing merge_method.
     */
    static void requireKnownKeys(Path file, String text, JsonNode node, Class<?> type, String path) {
        if (node == null || !node.isObject() || !type.isRecord()) {
            return;
        }
        Map<String, RecordComponent> components = new TreeMap<>();
        for (RecordComponent component : type.getRecordComponents()) {
            // @JsonProperty does not target record components; javac puts it on the accessor.
            components.put(component.getAccessor().getAnnotation(JsonProperty.class).value(), component);
        }
        for (Map.Entry<String, JsonNode> entry : node.properties()) {
            String key = entry.getKey();
            RecordComponent component = components.get(key);
            String keyPath = path.isEmpty() ? key : path + "." + key;
            if (component == null) {
                String keyAt = uniqueKeyPosition(text, key);
                throw new IllegalArgumentException(file + (keyAt == null ? "" : ":" + keyAt) + ": unknown key '" + key
                        + "'" + (path.isEmpty() ? "" : " in " + path) + NearestName.suggestion(key, components.keySet())
                        + "; valid keys here: " + String.join(", ", components.keySet()));
            }
            if (component.getType() == List.class && entry.getValue().isArray()) {
                Class<?> element = (Class<?>) ((ParameterizedType) component.getGenericType()).getActualTypeArguments()[0];
                for (int i = 0; i < entry.getValue().size(); i++) {
                    requireKnownKeys(file, text, entry.getValue().get(i), element, keyPath + "[" + i + "]");
                }
            } else {
                requireKnownKeys(file, text, entry.getValue(), component.getType(), keyPath);
            }
        }
    }

    /** The JSON pointer of the mapping a problem is in: {@code /models/0/parameters}. */
    private static String pointer(JsonMappingException e) {
        StringBuilder out = new StringBuilder();
        for (JsonMappingException.Reference reference : e.getPath()) {
            if (reference.getFieldName() != null) {
                out.append('/').append(reference.getFieldName());
            } else if (reference.getIndex() >= 0) {
                out.append('/').append(reference.getIndex());
            }
        }
        return out.toString();
    }

    /**
     * "line:column" of the first key at or under {@code pointer} named by a word of {@code message}, words in order
     * ("density must lie in ..." points at density, "linear takes no base_model" at base_model); else of the mapping's
     * own key; else null.
     */
    private static String keyPosition(String text, String pointer, String message) {
        Map<String, String> firstUnder = new java.util.HashMap<>();
        String own = null;
        try (JsonParser parser = MAPPER.createParser(text)) {
            for (var token = parser.nextToken(); token != null; token = parser.nextToken()) {
                if (token != com.fasterxml.jackson.core.JsonToken.FIELD_NAME) {
                    continue;
                }
                String at = parser.getParsingContext().pathAsPointer().toString();
                JsonLocation location = parser.currentTokenLocation();
                String position = location.getLineNr() + ":" + location.getColumnNr();
                if (at.equals(pointer)) {
                    own = position;
                } else if (at.startsWith(pointer + "/")) {
                    firstUnder.putIfAbsent(parser.currentName(), position);
                }
            }
        } catch (IOException e) {
            return null;
        }
        for (String word : message.split("[\\s,;:()\\[\\]{}]+")) {
            if (firstUnder.containsKey(word)) {
                return firstUnder.get(word);
            }
        }
        return own;
    }

    /** "line:column" of {@code key:} in the text if it occurs exactly once, else null. */
    private static String uniqueKeyPosition(String text, String key) {
        Matcher m = Pattern.compile("(?m)(^|[\\s{,-])(" + Pattern.quote(key) + ")\\s*:").matcher(text);
        if (!m.find()) {
            return null;
        }
        int start = m.start(2);
        if (m.find()) {
            return null;
        }
        int line = 1 + (int) text.substring(0, start).chars().filter(c -> c == '\n').count();
        int column = start - text.lastIndexOf('\n', start - 1);
        return line + ":" + column;
    }

    /** The key path of the problem, {@code models[1].parameters}; without the last key for an unknown key. */
    private static String path(JsonMappingException e, boolean dropLast) {
        List<JsonMappingException.Reference> references = new ArrayList<>(e.getPath());
        if (dropLast && !references.isEmpty()) {
            references.remove(references.size() - 1);
        }
        StringBuilder out = new StringBuilder();
        for (JsonMappingException.Reference reference : references) {
            if (reference.getFieldName() != null) {
                out.append(out.length() == 0 ? "" : ".").append(reference.getFieldName());
            } else if (reference.getIndex() >= 0) {
                out.append('[').append(reference.getIndex()).append(']');
            }
        }
        return out.toString();
    }

    private static YAMLMapper mapper() {
        SimpleModule names = new SimpleModule("mixtune-merge-names");
        names.addDeserializer(MergeMethod.class, text(MergeMethod::parse));
        names.addSerializer(MergeMethod.class, written(MergeMethod::yamlName));
        names.addDeserializer(DType.class, text(MergeConfig::parseDtype));
        names.addSerializer(DType.class, written(ModelConfig::torchDtypeName));
        // Jackson reads a path containing ':' as a URI; a merge config holds plain file paths.
        names.addDeserializer(Path.class, text(Path::of));
        names.addSerializer(Path.class, written(Path::toString));
        names.addDeserializer(Boolean.class, new FlagReader());
        names.addDeserializer(ParameterSetting.class, new ParameterSettingYaml.Reader());
        names.addSerializer(ParameterSetting.class, new ParameterSettingYaml.Writer());
        return YAMLMapper.builder(YAMLFactory.builder().disable(YAMLGenerator.Feature.WRITE_DOC_START_MARKER).build())
                .enable(DeserializationFeature.FAIL_ON_UNKNOWN_PROPERTIES)
                .enable(DeserializationFeature.FAIL_ON_NULL_FOR_PRIMITIVES)
                .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
                .addModule(names)
                .build();
    }

    /**
     * normalize, rescale, int8_mask: true or false, or 1 and 0 (1.0 and 0.0), since mergekit's parameter values are
     * numbers or lists and the configs it dumps (mergekit-evolve's best_config.yaml) write its flags as 1.0.
     */
    private static final class FlagReader extends JsonDeserializer<Boolean> {
        @Override
        public Boolean deserialize(JsonParser parser, DeserializationContext context) throws IOException {
            JsonNode node = context.readTree(parser);
            if (node.isBoolean()) {
                return node.booleanValue();
            }
            if (node.isNumber() && (node.doubleValue() == 0 || node.doubleValue() == 1)) {
                return node.doubleValue() == 1;
            }
            throw JsonMappingException.from(parser, "expected true or false (or 1 and 0, as mergekit writes them), got "
                    + node);
        }
    }

    private interface Parse<T> {
        T parse(String text);
    }

    private interface Name<T> {
        String of(T value);
    }

    private static <T> JsonDeserializer<T> text(Parse<T> parse) {
        return new JsonDeserializer<>() {
            @Override
            public T deserialize(JsonParser parser, DeserializationContext context) throws IOException {
                if (!parser.currentToken().isScalarValue()) {
                    throw context.wrongTokenException(parser, String.class, parser.currentToken(), "expected a string");
                }
                try {
                    return parse.parse(parser.getValueAsString());
                } catch (IllegalArgumentException e) {
                    throw JsonMappingException.from(parser, e.getMessage(), e);
                }
            }
        };
    }

    private static <T> JsonSerializer<T> written(Name<T> name) {
        return new JsonSerializer<>() {
            @Override
            public void serialize(T value, JsonGenerator generator, SerializerProvider provider) throws IOException {
                generator.writeString(name.of(value));
            }
        };
    }
}
