"""Alert state and notifications: states, the notification policy, silences, the outbox, the pipeline."""
