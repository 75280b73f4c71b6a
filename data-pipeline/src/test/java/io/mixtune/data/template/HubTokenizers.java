package io.mixtune.data.template;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.mixtune.model.config.ModelPreset;
import io.mixtune.model.tokenizer.TextTokenizer;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.Map;

/**
 * The bundled Mistral v1 tokenizer.json with special added tokens, as a Hub checkpoint's file lists them: {@code
 * <unk> <s> </s>} at their vocabulary ids 0-2 (Mistral-7B-v0.1), and ChatML's and [INST]'s past the vocabulary (ids
 * 32000-32003, as ChatML fine-tunes of Mistral add them).
 */
final class HubTokenizers {
    static final Map<String, Long> IDS = Map.ofEntries(Map.entry("<unk>", 0L), Map.entry("<s>", 1L),
            Map.entry("</s>", 2L), Map.entry("<|im_start|>", 32000L), Map.entry("<|im_end|>", 32001L),
            Map.entry("[INST]", 32002L), Map.entry("[/INST]", 32003L),
            // other families' markers, as interop/make_hf_template_goldens.py's HUB_MARKERS
            Map.entry("<|start_header_id|>", 32004L), Map.entry("<|end_header_id|>", 32005L),
            Map.entry("<|eot_id|>", 32006L), Map.entry("<start_of_turn>", 32007L), Map.entry("<end_of_turn>", 32008L),
            Map.entry("<|user|>", 32009L), Map.entry("<|assistant|>", 32010L), Map.entry("<|end|>", 32011L));

    private HubTokenizers() {}

    static byte[] json(String... specialTokens) throws IOException {
        ObjectMapper json = new ObjectMapper();
        ObjectNode root;
        try (InputStream in = HubTokenizers.class.getClassLoader().getResourceAsStream(ModelPreset.MISTRAL_V1_TOKENIZER)) {
            root = (ObjectNode) json.readTree(in);
        }
        ArrayNode added = root.putArray("added_tokens");
        for (String token : specialTokens) {
            added.addObject().put("id", IDS.get(token)).put("content", token).put("single_word", false)
                    .put("lstrip", false).put("rstrip", false).put("normalized", false).put("special", true);
        }
        return json.writeValueAsBytes(root);
    }

    static TextTokenizer open(String... specialTokens) throws IOException {
        return TextTokenizer.read(new ByteArrayInputStream(json(specialTokens)), "hub tokenizer.json", 1, 2);
    }
}
