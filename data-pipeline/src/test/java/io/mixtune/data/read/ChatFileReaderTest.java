package io.mixtune.data.read;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.mixtune.data.chat.ChatCompletion;
import io.mixtune.data.chat.Conversation;
import io.mixtune.data.chat.InvalidRecordException;
import io.mixtune.data.chat.Message;
import io.mixtune.data.chat.PlainText;
import io.mixtune.data.chat.Role;
import io.mixtune.data.chat.SftRecord;
import io.mixtune.data.chat.TextCompletion;
import java.io.IOException;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.zip.GZIPOutputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

class ChatFileReaderTest {
    @TempDir
    Path dir;

    record Result(ChatFormat format, List<Conversation> conversations, List<InvalidRecordException> invalid) {}

    Result read(Path file) {
        List<Conversation> conversations = new ArrayList<>();
        List<InvalidRecordException> invalid = new ArrayList<>();
        ChatFormat format = new ChatFileReader(file, null).read(conversations::add, invalid::add);
        return new Result(format, conversations, invalid);
    }

    Path write(String name, String text) throws IOException {
        Path file = dir.resolve(name);
        Files.writeString(file, text);
        return file;
    }

    static final List<Message> EXPECTED = List.of(new Message(Role.SYSTEM, "Be brief."), new Message(Role.USER, "Hi"),
            new Message(Role.ASSISTANT, "Hello!"), new Message(Role.USER, "2+2?"), new Message(Role.ASSISTANT, "4"));

    @Test
    void everyFormatGivesTheSameMessages() throws IOException {
        String messages = "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
                + "\"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, {\"role\": \"user\", "
                + "\"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n";
        String sharegpt = "{\"conversations\": [{\"from\": \"system\", \"value\": \"Be brief.\"}, {\"from\": \"human\", "
                + "\"value\": \"Hi\"}, {\"from\": \"gpt\", \"value\": \"Hello!\"}, {\"from\": \"human\", \"value\": \"2+2?\"}, "
                + "{\"from\": \"gpt\", \"value\": \"4\"}]}\n";
        String firefly = "{\"system\": \"Be brief.\", \"conversation\": [{\"human\": \"Hi\", \"assistant\": \"Hello!\"}, "
                + "{\"human\": \"2+2?\", \"assistant\": \"4\"}]}\n";
        assertEquals(new Result(ChatFormat.MESSAGES, List.of(new Conversation(EXPECTED, dir.resolve("m.jsonl") + ":1")),
                List.of()), read(write("m.jsonl", messages)));
        assertEquals(EXPECTED, read(write("s.jsonl", sharegpt)).conversations().get(0).messages());
        assertEquals(ChatFormat.FIREFLY, read(write("f.jsonl", firefly)).format());
        assertEquals(EXPECTED, read(write("f.jsonl", firefly)).conversations().get(0).messages());
        assertEquals(EXPECTED.subList(1, 5), read(write("u.jsonl", "{\"data\": [\"Hi\", \"Hello!\", \"2+2?\", \"4\"]}"))
                .conversations().get(0).messages());
        Result alpaca = read(write("a.jsonl", "{\"instruction\": \"Add.\", \"input\": \"2+2\", \"output\": \"4\"}\n"
                + "{\"instruction\": \"Say hi.\", \"input\": \"\", \"output\": \"Hi\"}"));
        assertEquals(List.of(new Message(Role.USER, "Add.\n\n2+2"), new Message(Role.ASSISTANT, "4")),
                alpaca.conversations().get(0).messages());
        assertEquals("Say hi.", alpaca.conversations().get(1).messages().get(0).content());
    }

    /** Every record of a file, with the detected format and the invalid ones. */
    record Records(ChatFormat format, List<SftRecord> records, List<String> invalid) {}

    Records readRecords(Path file, ChatFormat format, String textField) {
        List<SftRecord> records = new ArrayList<>();
        List<String> invalid = new ArrayList<>();
        ChatFormat detected = new ChatFileReader(file, format, textField).readRecords(records::add,
                e -> invalid.add(e.getMessage()));
        return new Records(detected, records, invalid);
    }

    @Test
    void textsAndPromptCompletionsAreDetectedAsTrlDetectsThem() throws IOException {
        Path texts = write("t.jsonl", "{\"text\": \"Once upon a time.\", \"id\": 3}\n{\"text\": \"\"}\n");
        assertEquals(new Records(ChatFormat.TEXT, List.of(new PlainText("Once upon a time.", texts + ":1"),
                new PlainText("", texts + ":2")), List.of()), readRecords(texts, null, "text"));
        Path body = write("b.jsonl", "{\"body\": \"Chapter one.\"}\n");
        assertEquals(List.of(new PlainText("Chapter one.", body + ":1")), readRecords(body, null, "body").records());

        Path standard = write("s.jsonl", "{\"prompt\": \"2+2=\", \"completion\": \" 4\"}\n");
        assertEquals(new Records(ChatFormat.PROMPT_COMPLETION, List.of(new TextCompletion("2+2=", " 4",
                standard + ":1")), List.of()), readRecords(standard, null, "text"));

        Path chat = write("c.jsonl", "{\"prompt\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, "
                + "{\"role\": \"user\", \"content\": \"Hi\"}, {\"role\": \"assistant\", \"content\": \"Hello!\"}, "
                + "{\"role\": \"user\", \"content\": \"2+2?\"}], "
                + "\"completion\": [{\"role\": \"assistant\", \"content\": \"4\"}]}\n");
        Records conversational = readRecords(chat, null, "text");
        assertEquals(List.of(new ChatCompletion(new Conversation(EXPECTED, chat + ":1"), 1)),
                conversational.records(), "one answer in the prompt: the completion is the template's turn 1");
        // A chat layout wins over a text field, as it did before texts were read
        Path both = write("m.jsonl", "{\"text\": \"x\", \"messages\": [{\"role\": \"user\", \"content\": \"a\"}, "
                + "{\"role\": \"assistant\", \"content\": \"b\"}]}\n");
        assertEquals(ChatFormat.MESSAGES, readRecords(both, null, "text").format());
    }

    @Test
    void badTextAndPromptCompletionRecordsAreNamedByFileAndLine() throws IOException {
        Path texts = write("t.jsonl", String.join("\n",
                "{\"text\": \"fine\"}",
                "{\"txt\": \"typo\"}",
                "{\"text\": 42}",
                "{\"text\": null}",
                "[\"text\"]",
                ""));
        Records read = readRecords(texts, null, "text");
        assertEquals(1, read.records().size());
        assertEquals(List.of(texts + ":2: missing field text", texts + ":3: field text is not a string: 42",
                texts + ":4: missing field text", texts + ":5: a record is a JSON object, got ARRAY"), read.invalid());

        Path pairs = write("p.jsonl", String.join("\n",
                "{\"prompt\": \"a\", \"completion\": \"b\"}",
                "{\"prompt\": \"a\"}",
                "{\"prompt\": \"a\", \"completion\": [{\"role\": \"assistant\", \"content\": \"b\"}]}",
                "{\"prompt\": [{\"role\": \"user\", \"content\": \"a\"}], \"completion\": [{\"role\": \"user\", "
                        + "\"content\": \"b\"}]}",
                "{\"prompt\": [{\"role\": \"user\", \"content\": \"a\"}], \"completion\": []}",
                "{\"prompt\": [{\"role\": \"user\"}], \"completion\": [{\"role\": \"assistant\", \"content\": \"b\"}]}",
                "{\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}",
                ""));
        List<String> problems = readRecords(pairs, ChatFormat.PROMPT_COMPLETION, "text").invalid();
        assertEquals(List.of(
                pairs + ":2: missing field completion: a prompt-completion record has a prompt and a completion",
                pairs + ":3: fields prompt and completion must both be strings (standard) or both lists of messages "
                        + "(conversational), got STRING and ARRAY",
                pairs + ":4: field completion must begin and end with an assistant message",
                pairs + ":5: field completion is an empty list of messages",
                pairs + ":6: missing field prompt[].content",
                pairs + ":7: a preference pair (prompt, chosen, rejected), not a prompt and its completion: train it "
                        + "with train.method dpo or reward"), problems);
        // a text file read as prompt-completion, and the other way round
        assertEquals(List.of(texts + ":1: missing field prompt: a prompt-completion record has a prompt and a "
                + "completion"), readRecords(texts, ChatFormat.PROMPT_COMPLETION, "text").invalid().subList(0, 1));
        assertEquals(pairs + ":1: missing field text", readRecords(pairs, ChatFormat.TEXT, "text").invalid().get(0));
    }

    @Test
    void jsonArraysAndGzipStreamToo() throws IOException {
        Path array = write("a.json", "[\n  {\"data\": [\"a\", \"b\"]},\n  {\"data\": [\"c\", \"d\"]}\n]\n");
        Result result = read(array);
        assertEquals(2, result.conversations().size());
        assertEquals(array + ":3", result.conversations().get(1).source());
        Path gz = dir.resolve("m.jsonl.gz");
        try (OutputStream out = new GZIPOutputStream(Files.newOutputStream(gz))) {
            out.write("\n{\"data\": [\"x\", \"y\"]}\n".getBytes(StandardCharsets.UTF_8));
        }
        Result gzipped = read(gz);
        assertEquals("y", gzipped.conversations().get(0).messages().get(1).content());
        assertEquals(gz + ":2", gzipped.conversations().get(0).source(), "blank lines still count");
    }

    @Test
    void badRecordsAreNamedByFileAndLineAndTheOthersStillRead() throws IOException {
        Path file = dir.resolve("bad.jsonl");
        byte[] invalidUtf8 = {'{', '"', 'd', 'a', 't', 'a', '"', ':', '[', '"', (byte) 0xC3, (byte) 0x28, '"', ']', '}'};
        try (OutputStream out = Files.newOutputStream(file)) {
            out.write(String.join("\n",
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"ok\"}, {\"role\": \"assistant\", \"content\": \"ok\"}]}",
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}",
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]}",
                    "{\"messages\": [{\"role\": \"assistant\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]}",
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
                    "{\"messages\": [{\"role\": \"user\", \"content\": 7}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
                    "{\"messages\": [{\"role\": \"user\"}, {\"role\": \"assistant\", \"content\": \"b\"}]}",
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}",
                    "").getBytes(StandardCharsets.UTF_8));
            out.write(invalidUtf8);
            out.write('\n');
        }
        Result result = read(file);
        // Lines 4 and 5 read: the order of roles and empty messages are the template's to judge (MistralTemplate
        // refuses them: ChatDatasetTest), and line 4's closing user message is dropped.
        assertEquals(List.of(1L, 4L, 5L), result.conversations().stream()
                .map(c -> Long.parseLong(c.source().substring(c.source().lastIndexOf(':') + 1))).toList());
        assertEquals(List.of(new Message(Role.ASSISTANT, "a")), result.conversations().get(1).messages());
        assertEquals(1, result.conversations().get(1).droppedTrailingMessages());
        List<String> problems = result.invalid().stream().map(InvalidRecordException::getMessage).toList();
        assertEquals(6, problems.size(), problems.toString());
        assertTrue(problems.get(0).startsWith(file + ":2: malformed JSON"), problems.get(0));
        assertEquals(file + ":3: no assistant message: nothing to train on", problems.get(1));
        assertTrue(problems.get(2).contains(":6: field messages[].content is not a string: 7"), problems.get(2));
        assertTrue(problems.get(3).contains(":7: missing field messages[].content"), problems.get(3));
        assertEquals(file + ":8: no assistant message: nothing to train on", problems.get(4));
        assertTrue(problems.get(5).equals(file + ":9: invalid UTF-8: the line is not UTF-8 text"), problems.get(5));
        assertEquals("no assistant message", result.invalid().get(1).reason(), "reasons group the counts");
    }

    @Test
    void aMissingFileAndABrokenArrayStopWithTheirName() throws IOException {
        assertTrue(assertThrows(RuntimeException.class, () -> read(dir.resolve("none.jsonl"))).getMessage()
                .contains("none.jsonl: no such data file"));
        Path array = write("broken.json", "[\n{\"data\": [\"a\", \"b\"]},\n{\"data\": [\"a\" \"b\"]}\n]");
        InvalidRecordException e = assertThrows(InvalidRecordException.class, () -> read(array));
        assertTrue(e.getMessage().startsWith(array + ":3: malformed JSON"), e.getMessage());
    }

    @ParameterizedTest
    @ValueSource(strings = {"chats.parquet", "chats.arrow", "chats.csv", "chats.tsv", "chats.CSV", "chats.csv.gz"})
    void tableFilesAreRefusedByTheirNameEvenWhenSkippingBadRecords(String name) throws IOException {
        // read() hands bad records to a handler that collects them, as skip_invalid does: a table file still stops.
        Path file = write(name, "{\"data\": [\"a\", \"b\"]}\n");
        InvalidRecordException e = assertThrows(InvalidRecordException.class, () -> read(file));
        assertTrue(e.getMessage().startsWith(file + ": "), e.getMessage());
        assertTrue(e.getMessage().contains("mixtune reads JSONL or a JSON array (plain or .gz)"), e.getMessage());
    }

    @Test
    void binaryContentIsRefusedWhateverTheNameAndNotReadAsBrokenLines() throws IOException {
        // A Parquet file's bytes: "PAR1", then Thrift pages with NULs and newlines in them (a real one read as JSONL
        // gave "skipped 5" and one garbage sample before this refusal).
        byte[] parquet = {'P', 'A', 'R', '1', 0x15, 0x04, 0x15, (byte) 0x90, 0x01, 0x00, '\n', '{', '}', '\n', 0, 0};
        Path named = dir.resolve("chats.jsonl");
        Files.write(named, parquet);
        InvalidRecordException e = assertThrows(InvalidRecordException.class, () -> read(named));
        assertEquals(named + ": a Parquet file (it starts with PAR1): mixtune reads JSONL or a JSON array (plain or "
                + ".gz); write it as JSONL first, e.g. pandas.read_parquet(f).to_json(out, orient='records', "
                + "lines=True)", e.getMessage());
        Path binary = dir.resolve("chats.json");
        Files.write(binary, new byte[] {'{', 0, 0, 0, 1, 2, '\n'});
        assertTrue(assertThrows(InvalidRecordException.class, () -> read(binary)).getMessage()
                .startsWith(binary + ": not text (it holds NUL bytes): mixtune reads JSONL"));
    }

    @Test
    void reasonsGroupIndicesButKeepTheNumbersOfNames() {
        assertEquals("invalid UTF-8", new InvalidRecordException("f:9", "invalid UTF-8: the line is not UTF-8 text")
                .reason());
        assertEquals("data[N] is not a string", new InvalidRecordException("f:2", "data[3] is not a string: 7")
                .reason());
        assertEquals("message N (user) is empty", new InvalidRecordException("f:5", "message 12 (user) is empty")
                .reason());
    }

    @Test
    void contentAsAListOfTextPartsIsTheirTextJoinedAsAxolotlJoinsThem() throws IOException {
        // axolotl's _convert_content_parts: "".join of each part's text, in order, nothing between.
        Result result = read(write("parts.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": "
                + "\"text\", \"text\": \"Hi\"}, {\"type\": \"text\", \"text\": \" there\"}]}, {\"role\": \"assistant\", "
                + "\"content\": [{\"type\": \"text\", \"text\": \"Hello\"}]}]}\n"));
        assertEquals(List.of(), result.invalid());
        assertEquals(List.of(new Message(Role.USER, "Hi there"), new Message(Role.ASSISTANT, "Hello")),
                result.conversations().get(0).messages());
    }

    @Test
    void aContentPartThatIsNotTextIsRefusedNamingTheMessageAndItsType() throws IOException {
        Path file = write("image.jsonl", "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                + "\"text\": \"What is this?\"}, {\"type\": \"image_url\", \"image_url\": {\"url\": \"x.png\"}}]}, "
                + "{\"role\": \"assistant\", \"content\": \"A cat.\"}]}\n"
                + "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\"}]}, "
                + "{\"role\": \"assistant\", \"content\": \"A cat.\"}]}\n");
        List<InvalidRecordException> invalid = read(file).invalid();
        assertEquals(file + ":1: message 1's content part 2 is of type \"image_url\": mixtune trains on text only "
                + "(parts of type text)", invalid.get(0).getMessage());
        assertEquals("message N's content part N is of type \"image_url\"", invalid.get(0).reason());
        assertEquals(file + ":2: message 1's content part 1 (type text) has no string field text",
                invalid.get(1).getMessage());
    }

    /** As transformers' apply_chat_template gets them: a message's other keys as they are, and the record's tools. */
    @Test
    void toolMessagesToolCallsAndToolsAreReadAsTheRecordHasThem() throws IOException {
        Result result = read(write("tools.jsonl", "{\"tools\": [{\"type\": \"function\", \"function\": {\"name\": "
                + "\"w\"}}], \"messages\": [{\"role\": \"user\", \"content\": \"Weather?\"}, {\"role\": \"assistant\", "
                + "\"content\": null, \"tool_calls\": [{\"id\": \"call00001\", \"type\": \"function\", \"function\": "
                + "{\"name\": \"w\", \"arguments\": \"{}\"}}]}, {\"role\": \"tool\", \"tool_call_id\": \"call00001\", "
                + "\"content\": \"sunny\"}, {\"role\": \"assistant\", \"content\": \"Sunny.\"}]}\n"));
        assertEquals(List.of(), result.invalid());
        Conversation conversation = result.conversations().get(0);
        assertEquals(List.of(Map.of("type", "function", "function", Map.of("name", "w"))), conversation.tools());
        Message call = conversation.messages().get(1);
        assertEquals("", call.content(), "a null content beside tool_calls");
        assertEquals(List.of(Map.of("id", "call00001", "type", "function", "function", Map.of("name", "w",
                "arguments", "{}"))), call.fields().get("tool_calls"), "arguments stay a string, as transformers has it");
        assertTrue(call.callsTools());
        assertEquals(new Message(Role.TOOL, "sunny", Map.of("tool_call_id", "call00001")),
                conversation.messages().get(2));
        assertEquals("the mistral template has no tools", conversation.toolProblem("mistral").substring(
                "message 2 (assistant) has tool_calls: ".length(), "message 2 (assistant) has tool_calls: ".length()
                        + "the mistral template has no tools".length()));
    }

    /**
     * axolotl's chat_template maps ShareGPT's tool to the tool role and leaves function_call and observation (LLaMA-
     * Factory's) unmapped: mixtune reads tool and names the other two.
     */
    @Test
    void shareGptToolIsAToolMessageAndFunctionCallIsRefusedByName() throws IOException {
        Result tool = read(write("t.jsonl", "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, "
                + "{\"from\": \"tool\", \"value\": \"x\"}, {\"from\": \"gpt\", \"value\": \"b\"}]}"));
        assertEquals(Role.TOOL, tool.conversations().get(0).messages().get(1).role());
        Path file = write("f.jsonl", "{\"conversations\": [{\"from\": \"human\", \"value\": \"a\"}, "
                + "{\"from\": \"function_call\", \"value\": \"x\"}, {\"from\": \"observation\", \"value\": \"y\"}, "
                + "{\"from\": \"gpt\", \"value\": \"b\"}]}");
        assertEquals(file + ":1: speaker \"function_call\" in conversations[].from (a tool call or its result as "
                + "text): neither mixtune nor axolotl's chat_template maps it; write the chat as messages, the call as "
                + "an assistant message with tool_calls and the result as a tool message",
                read(file).invalid().get(0).getMessage());
    }
}
