package io.mixtune.data.read;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.type.TypeReference;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.mixtune.data.chat.ChatCompletion;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.PlainText;
import io.mixtune.data.chat.Role;
import io.mixtune.data.chat.SftRecord;
import io.mixtune.data.chat.TextCompletion;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;

/**
 * The SFT record layouts mixtune reads: the chat layouts, each turned into plain messages, and TRL's two other dataset
 * types, language modeling ({@link #TEXT}) and prompt-completion ({@link #PROMPT_COMPLETION}).
 */
public enum ChatFormat {
    /**
     * OpenAI / Hugging Face messages, ultrachat_200k included: {"messages": [{"role", "content"}, ...], "tools"?};
     * roles system, user, assistant (with tool_calls, its content then may be null) and tool.
     */
    MESSAGES("messages"),
    /** UltraChat's original layout: {"data": [user, assistant, user, assistant, ...]}. */
    ULTRACHAT("ultrachat"),
    /** ShareGPT: {"conversations": [{"from": "system" | "human" | "gpt" | "tool", "value"}, ...]}. */
    SHAREGPT("sharegpt"),
    /** Firefly: {"system"?, "conversation": [{"human", "assistant"}, ...]}. */
    FIREFLY("firefly"),
    /** Alpaca: {"instruction", "input"?, "output"}: one turn, the input appended to the instruction. */
    ALPACA("alpaca"),
    /**
     * Language modeling, TRL's {@code {"text": ...}} (the field is data.dataset_text_field, TRL's dataset_text_field):
     * continued pretraining, loss on every token.
     */
    TEXT("text"),
    /**
     * TRL's prompt-completion: {"prompt", "completion"}, both strings (standard: raw text) or both lists of messages
     * (conversational: through the chat template); the loss on the completion unless loss_on is train_on_inputs.
     */
    PROMPT_COMPLETION("prompt_completion");

    /** The keys a recipe's data.format takes besides auto. */
    public static final String KEYS = "messages, ultrachat, sharegpt, firefly, alpaca, text, prompt_completion";

    private static final ObjectMapper JSON = new ObjectMapper();

    private final String key;

    ChatFormat(String key) {
        this.key = key;
    }

    /** The name a recipe uses. */
    public String key() {
        return key;
    }

    public static ChatFormat byKey(String key) {
        for (ChatFormat format : values()) {
            if (format.key.equals(key.toLowerCase(Locale.ROOT))) {
                return format;
            }
        }
        throw new IllegalArgumentException("unknown data format \"" + key + "\": expected one of " + KEYS);
    }

    /**
     * The format a record is in, by its keys, or null when it is in none: the chat layouts first (as before TRL's
     * types were read), then TRL's order in SFTTrainer._prepare_dataset: a record with a prompt is prompt-completion,
     * else one with the text field is language modeling.
     */
    public static ChatFormat detect(JsonNode record, String textField) {
        if (record.has("messages")) {
            return MESSAGES;
        }
        if (record.has("data")) {
            return ULTRACHAT;
        }
        if (record.has("conversations")) {
            return SHAREGPT;
        }
        if (record.has("conversation")) {
            return FIREFLY;
        }
        if (record.has("instruction") && record.has("output")) {
            return ALPACA;
        }
        if (record.has("prompt")) {
            return PROMPT_COMPLETION;
        }
        if (record.has(textField)) {
            return TEXT;
        }
        return null;
    }

    /**
     * The record as what SFT trains on: a text, a prompt with its completion, or a conversation.
     *
     * @param textField the field of a {@link #TEXT} record's text
     * @throws IllegalArgumentException naming the field that is missing or of the wrong type
     */
    public SftRecord record(JsonNode record, String source, String textField) {
        return switch (this) {
            case TEXT -> new PlainText(text(record, textField, textField), source);
            case PROMPT_COMPLETION -> promptCompletion(record, source);
            default -> conversation(record, source);
        };
    }

    /**
     * TRL's is_conversational decides by the first message list it finds; mixtune asks prompt and completion to agree,
     * as TRL's prompt + completion does (a string and a list cannot be added).
     */
    private static SftRecord promptCompletion(JsonNode record, String source) {
        JsonNode prompt = record.get("prompt");
        JsonNode completion = record.get("completion");
        if (record.has("chosen") || record.has("rejected")) {
            throw new IllegalArgumentException("a preference pair (prompt, chosen, rejected), not a prompt and its "
                    + "completion: train it with train.method dpo or reward");
        }
        if (prompt == null || prompt.isNull() || completion == null || completion.isNull()) {
            throw new IllegalArgumentException("missing field " + (prompt == null || prompt.isNull() ? "prompt"
                    : "completion") + ": a prompt-completion record has a prompt and a completion");
        }
        if (prompt.isTextual() && completion.isTextual()) {
            return new TextCompletion(prompt.asText(), completion.asText(), source);
        }
        if (!prompt.isArray() || !completion.isArray()) {
            throw new IllegalArgumentException("fields prompt and completion must both be strings (standard) or both "
                    + "lists of messages (conversational), got " + prompt.getNodeType() + " and "
                    + completion.getNodeType());
        }
        List<Message> messages = messageList(prompt, "prompt");
        List<Message> answer = messageList(completion, "completion");
        if (messages.isEmpty() || answer.isEmpty()) {
            throw new IllegalArgumentException("field " + (messages.isEmpty() ? "prompt" : "completion")
                    + " is an empty list of messages");
        }
        if (answer.get(0).role() != Role.ASSISTANT || answer.get(answer.size() - 1).role() != Role.ASSISTANT) {
            throw new IllegalArgumentException("field completion must begin and end with an assistant message");
        }
        int promptAnswers = (int) messages.stream().filter(m -> m.role() == Role.ASSISTANT).count();
        messages.addAll(answer);
        return new ChatCompletion(new Conversation(messages, tools(record), source), promptAnswers);
    }

    /**
     * The record as a conversation: its messages, and its {@code tools} (a list of tool definitions, or a JSON string
     * of one, as axolotl reads it) where it has them.
     *
     * @throws IllegalArgumentException naming the field that is missing or of the wrong type
     */
    public Conversation conversation(JsonNode record, String source) {
        return new Conversation(messages(record), tools(record), source);
    }

    /** A record's {@code tools} as plain lists and maps, or null where it has none. */
    private static List<Object> tools(JsonNode record) {
        JsonNode tools = record.get("tools");
        if (tools != null && tools.isTextual()) {
            try {
                tools = JSON.readTree(tools.asText());
            } catch (JsonProcessingException e) {
                throw new IllegalArgumentException("field tools is a string but not JSON: " + e.getOriginalMessage());
            }
        }
        if (tools != null && !tools.isNull() && !tools.isArray()) {
            throw new IllegalArgumentException("field tools is not a list: " + abbreviate(tools));
        }
        return tools == null || tools.isNull() ? null
                : JSON.convertValue(tools, new TypeReference<List<Object>>() {});
    }

    /** A message's keys other than role and content, as plain Java values (a template reads them). */
    private static Map<String, Object> otherFields(JsonNode message) {
        Map<String, Object> fields = new LinkedHashMap<>();
        message.fields().forEachRemaining(field -> {
            if (!field.getKey().equals("role") && !field.getKey().equals("content") && !field.getValue().isNull()) {
                fields.put(field.getKey(), JSON.convertValue(field.getValue(), Object.class));
            }
        });
        return fields;
    }

    /**
     * The record's messages.
     *
     * @throws IllegalArgumentException naming the field that is missing or of the wrong type
     */
    public List<Message> messages(JsonNode record) {
        List<Message> messages = new ArrayList<>();
        switch (this) {
            case MESSAGES -> messages.addAll(messageList(array(record, "messages"), "messages"));
            case ULTRACHAT -> {
                int i = 0;
                for (JsonNode text : array(record, "data")) {
                    if (!text.isTextual()) {
                        throw new IllegalArgumentException("data[" + i + "] is not a string: " + abbreviate(text));
                    }
                    messages.add(new Message(i++ % 2 == 0 ? Role.USER : Role.ASSISTANT, text.asText()));
                }
            }
            case SHAREGPT -> {
                for (JsonNode message : array(record, "conversations")) {
                    String from = text(message, "from", "conversations[].from");
                    messages.add(new Message(switch (from) {
                        case "system" -> Role.SYSTEM;
                        case "human", "user" -> Role.USER;
                        case "gpt", "assistant" -> Role.ASSISTANT;
                        case "tool" -> Role.TOOL;
                        case "function_call", "observation" -> throw new IllegalArgumentException("speaker \"" + from
                                + "\" in conversations[].from (a tool call or its result as text): neither mixtune nor "
                                + "axolotl's chat_template maps it; write the chat as messages, the call as an "
                                + "assistant message with tool_calls and the result as a tool message");
                        default -> throw new IllegalArgumentException("unknown speaker \"" + from
                                + "\" in conversations[].from: expected system, human, gpt or tool");
                    }, text(message, "value", "conversations[].value")));
                }
            }
            case FIREFLY -> {
                if (record.has("system") && !record.get("system").isNull()) {
                    messages.add(new Message(Role.SYSTEM, text(record, "system", "system")));
                }
                for (JsonNode turn : array(record, "conversation")) {
                    messages.add(new Message(Role.USER, text(turn, "human", "conversation[].human")));
                    messages.add(new Message(Role.ASSISTANT, text(turn, "assistant", "conversation[].assistant")));
                }
            }
            case ALPACA -> {
                String instruction = text(record, "instruction", "instruction");
                String input = record.hasNonNull("input") ? text(record, "input", "input") : "";
                messages.add(new Message(Role.USER, input.isEmpty() ? instruction : instruction + "\n\n" + input));
                messages.add(new Message(Role.ASSISTANT, text(record, "output", "output")));
            }
            default -> throw new IllegalArgumentException("a " + key + " record holds no conversation");
        }
        return messages;
    }

    /** OpenAI / Hugging Face messages of role and content, from the list in {@code field}. */
    private static List<Message> messageList(JsonNode list, String field) {
        List<Message> messages = new ArrayList<>();
        int index = 0;
        for (JsonNode message : list) {
            index++;
            String role = text(message, "role", field + "[].role");
            Map<String, Object> fields = otherFields(message);
            Message parsed = new Message(switch (role) {
                case "system" -> Role.SYSTEM;
                case "user" -> Role.USER;
                case "assistant" -> Role.ASSISTANT;
                case "tool" -> Role.TOOL;
                default -> throw new IllegalArgumentException("unknown role \"" + role
                        + "\": expected system, user, assistant or tool");
            }, fields.containsKey("tool_calls") && !message.hasNonNull("content") ? ""
                    : content(message, index, field), fields);
            if (parsed.role() != Role.ASSISTANT && fields.containsKey("tool_calls")) {
                throw new IllegalArgumentException("message " + index + " has tool_calls but the role " + role
                        + ": only an assistant calls tools");
            }
            messages.add(parsed);
        }
        return messages;
    }

    /**
     * A message's content: a string, or a list of parts as OpenAI and Hugging Face write them
     * ({@code [{"type": "text", "text": ...}, ...]}), whose texts are joined in order with nothing between, as axolotl's
     * chat_template strategy joins them; a part of another type (an image...) is refused, mixtune training on text.
     */
    private static String content(JsonNode message, int index, String field) {
        JsonNode content = message.get("content");
        if (content == null || !content.isArray()) {
            return text(message, "content", field + "[].content");
        }
        StringBuilder text = new StringBuilder();
        int partIndex = 0;
        for (JsonNode part : content) {
            partIndex++;
            String where = "message " + index + "'s content part " + partIndex;
            if (!part.isObject()) {
                throw new IllegalArgumentException(where + " is not an object: " + abbreviate(part));
            }
            String type = part.path("type").isTextual() ? part.get("type").asText() : "text";
            if (!type.equals("text")) {
                throw new IllegalArgumentException(where + " is of type \"" + type + "\": mixtune trains on text only "
                        + "(parts of type text)");
            }
            if (!part.path("text").isTextual()) {
                throw new IllegalArgumentException(where + " (type text) has no string field text");
            }
            text.append(part.get("text").asText());
        }
        return text.toString();
    }

    private static JsonNode array(JsonNode record, String field) {
        JsonNode node = record.get(field);
        if (node == null || node.isNull()) {
            throw new IllegalArgumentException("missing field " + field);
        }
        if (!node.isArray()) {
            throw new IllegalArgumentException("field " + field + " is not a list: " + abbreviate(node));
        }
        return node;
    }

    private static String text(JsonNode node, String field, String label) {
        JsonNode value = node.get(field);
        if (value == null || value.isNull()) {
            throw new IllegalArgumentException("missing field " + label);
        }
        if (!value.isTextual()) {
            throw new IllegalArgumentException("field " + label + " is not a string: " + abbreviate(value));
        }
        return value.asText();
    }

    private static String abbreviate(JsonNode node) {
        String text = node.toString();
        return text.length() > 60 ? text.substring(0, 57) + "..." : text;
    }
}
