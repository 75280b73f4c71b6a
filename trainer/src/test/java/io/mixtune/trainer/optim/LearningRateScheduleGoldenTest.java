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
 * constant, warmup given in steps or as a fraction of the run, cosine_with_min_lr (mixtune's cosine with
 * min_lr_ratio, given as min_lr_rate or min_lr), and with their lr_scheduler_kwargs cosine's num_cycles,
 * cosine_with_restarts, polynomial, inverse_sqrt, cosine_warmup_with_min_lr and warmup_stable_decay.
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
            LearningRateSchedule schedule = new LearningRateSchedule(
                    LearningRateSchedule.Kind.named(c.get("schedule").asText()), c.get("lr").asDouble(), warmup, total,
                    kwargs(c));
            // polynomial's remaining^power is the C library's pow in transformers (glibc here): not correctly rounded,
            // it may differ from Java's Math.pow in the last bit (one value of the goldens, at power 0.5)
            boolean libmPow = schedule.kind() == LearningRateSchedule.Kind.POLYNOMIAL
                    && c.path("kwargs").path("power").asDouble(1) != 1;
            for (int step = 0; step < total; step++) {
                double expected = c.get("lrs").get(step).asDouble();
                assertEquals(expected, schedule.at(step), libmPow ? Math.ulp(expected) : 0, name + ": step " + step);
            }
        }
    }

    /** The case's train keys (kwargs), or its min_lr_ratio alone. */
    private static LearningRateSchedule.Kwargs kwargs(JsonNode c) {
        JsonNode k = c.path("kwargs");
        return new LearningRateSchedule.Kwargs(k.path("min_lr_ratio").asDouble(c.path("min_lr_ratio").asDouble(0)),
                k.has("num_cycles") ? k.get("num_cycles").asDouble() : null,
                k.has("power") ? k.get("power").asDouble() : null, k.has("lr_end") ? k.get("lr_end").asDouble() : null,
                k.has("timescale") ? k.get("timescale").asInt() : null,
                k.has("num_stable_steps") ? k.get("num_stable_steps").asInt() : null,
                k.has("num_decay_steps") ? k.get("num_decay_steps").asInt() : null,
                k.has("warmup_type") ? k.get("warmup_type").asText() : null,
                k.has("decay_type") ? k.get("decay_type").asText() : null,
                k.has("warmup_lr_rate") ? k.get("warmup_lr_rate").asDouble() : null);
    }
}
