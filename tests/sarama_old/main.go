// An old sarama client for tests/test_as_version.py: with Config.Version set to an old Kafka
// release, sarama sends the request versions of that release (Produce v0-2 with message
// formats v0/v1, Fetch v0-3, ListOffsets v0, OffsetCommit v1-2) and negotiates nothing.
// Usage: sarama-old BOOTSTRAP TOPIC VERSION (e.g. 0.10.0.0); prints the consumed records as JSON.
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o sarama-old main.go
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/Shopify/sarama"
)

type record struct {
	Offset    int64  `json:"offset"`
	Key       string `json:"key"`
	Value     string `json:"value"`
	Timestamp int64  `json:"timestamp"`
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	bootstrap, topic := []string{os.Args[1]}, os.Args[2]
	version, err := sarama.ParseKafkaVersion(os.Args[3])
	if err != nil {
		fail(err)
	}
	config := sarama.NewConfig()
	config.Version = version
	config.Producer.Return.Successes = true
	config.Producer.Compression = sarama.CompressionGZIP
	producer, err := sarama.NewSyncProducer(bootstrap, config)
	if err != nil {
		fail(err)
	}
	for i := 0; i < 3; i++ {
		message := &sarama.ProducerMessage{Topic: topic, Key: sarama.StringEncoder(fmt.Sprintf("k%d", i)),
			Value: sarama.StringEncoder(fmt.Sprintf("v%d", i))}
		if _, _, err := producer.SendMessage(message); err != nil {
			fail(err)
		}
	}
	producer.Close()
	consumer, err := sarama.NewConsumer(bootstrap, config)
	if err != nil {
		fail(err)
	}
	partition, err := consumer.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		fail(err)
	}
	records := []record{}
	for len(records) < 3 {
		select {
		case m := <-partition.Messages():
			records = append(records, record{m.Offset, string(m.Key), string(m.Value), m.Timestamp.UnixNano() / 1e6})
		case err := <-partition.Errors():
			fail(err)
		case <-time.After(10 * time.Second):
			fail(fmt.Errorf("no records after 10 s, got %d", len(records)))
		}
	}
	partition.Close()
	consumer.Close()
	out, _ := json.Marshal(records)
	fmt.Println(string(out))
}
