-- The id of the AMQP message a dead letter came in (its message-id
-- property: what the sender logged), where the message itself was
-- dead-lettered: a body that is not an event has no event id to find it
-- by. Not part of the (queue, message_id) key, which is the event's id:
-- the events packed in one message share their message's id.
ALTER TABLE dead_letters ADD COLUMN transport_id text;
