package io.mixtune.trainer.optim;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.IOException;
import java.io.InputStream;
import org.junit.jupiter.api.Test;

/**
 * The learning rate of every step against transformers 5.18's get_scheduler as its Trainer runs it
 * (interop/make_schedule_goldens.py): cosine, linear, constant_with_warmup (mixtune's constant with warmup) and
 * constant, warmup given in steps or as a fraction of the run, and cosine_with_min_lr (mixtune's cosine with
 * min_lr_ratio).
 */
class LearningRateScheduleGoldenTest {
    @Test
    void everyStepEqualsTransformers() throws IOException {
        JsonNode golden;
        try (InputStream in = getClass().getResourceAsStream("/golden/schedule/schedules.json")) {
            golden = new ObjectMapper().readTree(in);
        }
        for (JsonNode c : golden.get("cases")) {
            int total = c.get("total").asInt();
            int warmup = LearningRateSchedule.warmupSteps(c.path("warmup_steps").asInt(0),
                    c.hasNonNull("warmup_ratio") ? c.get("warmup_ratio").asDouble() : null, total);
            String name = c.get("hf_schedule").asText() + " " + c.path("warmup_steps").asText("")
                    + c.path("warmup_ratio").asText("") + "/" + total;
            assertEquals(c.get("warmup_steps_resolved").asInt(), warmup, name + ": warmup steps");
            LearningRateSchedule schedule = new LearningRateSchedule(c.get("schedule").asText(), c.get("lr").asDouble(),
                    warmup, total, c.path("min_lr_ratio").asDouble(0));
            for (int step = 0; step < total; step++) {
                assertEquals(c.get("lrs").get(step).asDouble(), schedule.at(step), name + ": step " + step);
            }
        }
    }
}
