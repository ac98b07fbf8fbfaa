// sarama agent for kbroker's compatibility matrix (--wide): the JSON-lines operations of
// compat/clients/__init__.py done with Debian's sarama (golang-github-shopify-sarama-dev, 1.22),
// which picks request versions from Config.Version instead of negotiating them.
// Build: GO111MODULE=off GOPATH=/usr/share/gocode go build -o sarama-agent agent.go security.go
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const release = "1.22.1"

type unsupported struct{ what string }

func (u unsupported) Error() string { return "sarama has no " + u.what }

type rec struct {
	K         *string     `json:"k"`
	V         *string     `json:"v"`
	H         [][]*string `json:"h"`
	Timestamp *int64      `json:"timestamp,omitempty"`
	Partition *int32      `json:"partition,omitempty"`
	Offset    *int64      `json:"offset,omitempty"`
	Arrived   *float64    `json:"arrived,omitempty"`
}

func unb64(s *string) []byte {
	if s == nil {
		return nil
	}
	b, _ := base64.StdEncoding.DecodeString(*s)
	if b == nil {
		b = []byte{}
	}
	return b
}

func b64(b []byte) *string {
	if b == nil {
		return nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &s
}

func fromMessage(m *sarama.ConsumerMessage) rec {
	r := rec{K: b64(m.Key), V: b64(m.Value), H: [][]*string{}}
	for _, h := range m.Headers {
		key := string(h.Key)
		r.H = append(r.H, []*string{&key, b64(h.Value)})
	}
	ts, p, o := m.Timestamp.UnixNano()/1e6, m.Partition, m.Offset
	now := float64(time.Now().UnixNano()) / 1e9
	r.Timestamp, r.Partition, r.Offset, r.Arrived = &ts, &p, &o, &now
	return r
}

func config(options map[string]interface{}) *sarama.Config {
	c := sarama.NewConfig()
	c.Version = sarama.V2_1_0_0
	c.ClientID = "compat-sarama-" + release
	c.Producer.Return.Successes = true
	c.Producer.RequiredAcks = sarama.WaitForAll
	c.Producer.Partitioner = sarama.NewManualPartitioner
	c.Producer.MaxMessageBytes = 4 << 20
	c.Consumer.Fetch.Max = 8 << 20
	c.Consumer.Return.Errors = true
	c.Metadata.Retry.Backoff = 200 * time.Millisecond
	if v, ok := options["max_request_size"].(float64); ok {
		c.Producer.MaxMessageBytes = int(v)
	}
	if v, ok := options["timeout_ms"].(float64); ok {
		c.Producer.Timeout = time.Duration(v) * time.Millisecond
		c.Producer.Retry.Max = 2
		c.Metadata.Retry.Max = 2
	}
	if v, ok := options["fetch_max_wait_ms"].(float64); ok {
		c.Consumer.MaxWaitTime = time.Duration(v) * time.Millisecond
	}
	if options["isolation"] == "read_committed" {
		c.Consumer.IsolationLevel = sarama.ReadCommitted
	}
	if options["idempotent"] == true {
		c.Producer.Idempotent = true
		c.Net.MaxOpenRequests = 1
	}
	codecs := map[string]sarama.CompressionCodec{"gzip": sarama.CompressionGZIP, "snappy": sarama.CompressionSnappy,
		"lz4": sarama.CompressionLZ4, "zstd": sarama.CompressionZSTD}
	if name, ok := options["compression"].(string); ok {
		c.Producer.Compression = codecs[name]
	}
	c.Consumer.Offsets.Initial = sarama.OffsetOldest
	if options["reset"] == "latest" {
		c.Consumer.Offsets.Initial = sarama.OffsetNewest
	}
	secure(c)
	return c
}

// running is a consumer kept in the background (a watcher or a group member).
type running struct {
	sync.Mutex
	records  []rec
	assigned [][]interface{}
	ready    bool
	err      string
	stop     func()
	session  sarama.ConsumerGroupSession
	autoMark bool
}

func (r *running) add(m *sarama.ConsumerMessage) {
	r.Lock()
	r.records = append(r.records, fromMessage(m))
	r.Unlock()
}

func (r *running) take() map[string]interface{} {
	r.Lock()
	defer r.Unlock()
	records := r.records
	r.records = nil
	if records == nil {
		records = []rec{}
	}
	var err interface{}
	if r.err != "" {
		err = r.err
	}
	assigned := r.assigned
	if assigned == nil {
		assigned = [][]interface{}{}
	}
	return map[string]interface{}{"assigned": assigned, "records": records, "error": err, "ready": r.ready}
}

// Setup, Cleanup and ConsumeClaim make running a sarama.ConsumerGroupHandler.
func (r *running) Setup(s sarama.ConsumerGroupSession) error {
	r.Lock()
	defer r.Unlock()
	r.session, r.assigned = s, [][]interface{}{}
	for topic, partitions := range s.Claims() {
		for _, p := range partitions {
			r.assigned = append(r.assigned, []interface{}{topic, p})
		}
	}
	sort.Slice(r.assigned, func(i, j int) bool { return r.assigned[i][1].(int32) < r.assigned[j][1].(int32) })
	r.ready = true
	return nil
}

func (r *running) Cleanup(sarama.ConsumerGroupSession) error {
	r.Lock()
	r.assigned = [][]interface{}{}
	r.Unlock()
	return nil
}

func (r *running) ConsumeClaim(s sarama.ConsumerGroupSession, claim sarama.ConsumerGroupClaim) error {
	for m := range claim.Messages() {
		r.add(m)
		if r.autoMark {
			s.MarkMessage(m, "")
		}
	}
	return nil
}

type agent struct {
	bootstrap []string
	member    *running
	watch     *running
}

func (a *agent) admin() (sarama.ClusterAdmin, error) { return sarama.NewClusterAdmin(a.bootstrap, config(nil)) }

// partitionConsumer starts at offset; sarama leaves an out-of-range offset to the application,
// whose documented recipe is to start again from the oldest or newest offset: the reset policy.
func (a *agent) partitionConsumer(topic string, partition int32, offset interface{}, options map[string]interface{}) (sarama.Consumer, sarama.PartitionConsumer, error) {
	consumer, err := sarama.NewConsumer(a.bootstrap, config(options))
	if err != nil {
		return nil, nil, err
	}
	start := map[interface{}]int64{"earliest": sarama.OffsetOldest, "latest": sarama.OffsetNewest}[offset]
	if n, ok := offset.(float64); ok {
		start = int64(n)
	}
	pc, err := consumer.ConsumePartition(topic, partition, start)
	if err == sarama.ErrOffsetOutOfRange {
		pc, err = consumer.ConsumePartition(topic, partition, config(options).Consumer.Offsets.Initial)
	}
	if err != nil {
		consumer.Close()
		return nil, nil, err
	}
	return consumer, pc, nil
}

func str(v interface{}) string { s, _ := v.(string); return s }

func num(v interface{}) int64 { n, _ := v.(float64); return int64(n) }

func opts(v interface{}) map[string]interface{} {
	m, _ := v.(map[string]interface{})
	if m == nil {
		m = map[string]interface{}{}
	}
	return m
}

func (a *agent) op(name string, args map[string]interface{}) (interface{}, error) {
	switch name {
	case "hello":
		return map[string]interface{}{"client": "sarama", "version": release, "detail": "Debian golang-github-shopify-sarama-dev, protocol as Kafka 2.1",
			"features": []string{"admin", "admin_groups", "timestamps", "commit_offsets", "repeated_headers", "idempotence",
				"compression:gzip", "compression:snappy", "compression:lz4", "compression:zstd"}}, nil
	case "metadata":
		client, err := sarama.NewClient(a.bootstrap, config(nil))
		if err != nil {
			return nil, err
		}
		defer client.Close()
		brokers := [][]interface{}{}
		for _, b := range client.Brokers() {
			host, port := b.Addr()[:strings.LastIndex(b.Addr(), ":")], b.Addr()[strings.LastIndex(b.Addr(), ":")+1:]
			var p int
			fmt.Sscan(port, &p)
			brokers = append(brokers, []interface{}{host, p})
		}
		topics := map[string]int{}
		names, err := client.Topics()
		for _, t := range names {
			ps, _ := client.Partitions(t)
			topics[t] = len(ps)
		}
		return map[string]interface{}{"brokers": brokers, "topics": topics}, err
	case "produce":
		var records []rec
		raw, _ := json.Marshal(args["records"])
		json.Unmarshal(raw, &records)
		producer, err := sarama.NewSyncProducer(a.bootstrap, config(opts(args["options"])))
		if err != nil {
			return nil, err
		}
		defer producer.Close()
		messages := []*sarama.ProducerMessage{}
		for _, r := range records {
			m := &sarama.ProducerMessage{Topic: str(args["topic"])}
			if r.K != nil {
				m.Key = sarama.ByteEncoder(unb64(r.K))
			}
			if r.V != nil {
				m.Value = sarama.ByteEncoder(unb64(r.V))
			}
			for _, h := range r.H {
				m.Headers = append(m.Headers, sarama.RecordHeader{Key: []byte(*h[0]), Value: unb64(h[1])})
			}
			if r.Partition != nil {
				m.Partition = *r.Partition
			}
			if r.Timestamp != nil {
				m.Timestamp = time.Unix(0, *r.Timestamp*1e6)
			}
			messages = append(messages, m)
		}
		if pace, ok := opts(args["options"])["pace_ms"].(float64); ok && pace > 0 {
			for _, m := range messages { // paced: one record per request, pace_ms apart, with one producer
				if _, _, err := producer.SendMessage(m); err != nil {
					return nil, err
				}
				time.Sleep(time.Duration(pace) * time.Millisecond)
			}
		} else if err := producer.SendMessages(messages); err != nil {
			if errs, ok := err.(sarama.ProducerErrors); ok && len(errs) > 0 {
				return nil, errs[0].Err
			}
			return nil, err
		}
		offsets := []int64{}
		for _, m := range messages {
			offsets = append(offsets, m.Offset)
		}
		return offsets, nil
	case "consume":
		consumer, pc, err := a.partitionConsumer(str(args["topic"]), int32(num(args["partition"])), args["offset"], opts(args["options"]))
		if err != nil {
			return nil, err
		}
		defer consumer.Close()
		defer pc.Close()
		out := []rec{}
		deadline := time.After(time.Duration(num(args["timeout_ms"])) * time.Millisecond)
		for int64(len(out)) < num(args["count"]) {
			select {
			case m := <-pc.Messages():
				out = append(out, fromMessage(m))
			case e := <-pc.Errors():
				return nil, e.Err
			case <-deadline:
				return out, nil
			}
		}
		return out, nil
	case "list_offsets":
		client, err := sarama.NewClient(a.bootstrap, config(nil))
		if err != nil {
			return nil, err
		}
		defer client.Close()
		at := map[interface{}]int64{"earliest": sarama.OffsetOldest, "latest": sarama.OffsetNewest}[args["spec"]]
		if n, ok := args["spec"].(float64); ok {
			at = int64(n)
		}
		offset, err := client.GetOffset(str(args["topic"]), int32(num(args["partition"])), at)
		if err != nil || offset < 0 {
			return nil, err
		}
		return offset, nil
	case "watch_start":
		consumer, pc, err := a.partitionConsumer(str(args["topic"]), int32(num(args["partition"])), args["offset"], opts(args["options"]))
		if err != nil {
			return nil, err
		}
		w := &running{ready: true}
		w.stop = func() { pc.Close(); consumer.Close() }
		go func() {
			for m := range pc.Messages() {
				w.add(m)
			}
		}()
		a.watch = w
		return nil, nil
	case "watch_state":
		return a.watch.take(), nil
	case "member_start":
		options := opts(args["options"])
		c := config(options)
		c.Consumer.Offsets.CommitInterval = 100 * time.Millisecond
		c.Consumer.Group.Heartbeat.Interval = time.Second
		c.Consumer.Group.Session.Timeout = 10 * time.Second
		if v, ok := options["session_timeout_ms"].(float64); ok {
			c.Consumer.Group.Session.Timeout = time.Duration(v) * time.Millisecond
		}
		if options["assignor"] == "roundrobin" {
			c.Consumer.Group.Rebalance.Strategy = sarama.BalanceStrategyRoundRobin
		}
		group, err := sarama.NewConsumerGroup(a.bootstrap, str(args["group"]), c)
		if err != nil {
			return nil, err
		}
		topics := []string{}
		for _, t := range args["topics"].([]interface{}) {
			topics = append(topics, t.(string))
		}
		m := &running{autoMark: options["auto_commit"] == true}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		m.stop = func() { cancel(); <-done; group.Close() }
		go func() { // as a robust application does: Consume again after an error, for a while
			defer close(done)
			for failures := 0; ctx.Err() == nil; {
				err := group.Consume(ctx, topics, m)
				if err == nil {
					failures = 0
					continue
				}
				if failures++; failures == 20 {
					m.Lock()
					m.err = err.Error()
					m.Unlock()
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		}()
		a.member = m
		return nil, nil
	case "member_state":
		return a.member.take(), nil
	case "member_commit":
		// sarama 1.22 commits marked offsets on its commit interval (100 ms here) and on close
		a.member.Lock()
		session := a.member.session
		a.member.Unlock()
		if session == nil {
			return nil, errors.New("no group session to commit in")
		}
		for _, o := range args["offsets"].([]interface{}) {
			t := o.([]interface{})
			session.MarkOffset(t[0].(string), int32(t[1].(float64)), int64(t[2].(float64)), "")
		}
		time.Sleep(500 * time.Millisecond)
		return nil, nil
	case "member_close":
		a.member.stop()
		return nil, nil
	}
	return a.adminOp(name, args)
}

func (a *agent) adminOp(name string, args map[string]interface{}) (interface{}, error) {
	known := map[string]bool{"create_topics": true, "delete_topics": true, "describe_configs": true, "alter_configs": true,
		"create_partitions": true, "list_groups": true, "describe_group": true, "group_offsets": true}
	if !known[name] {
		return nil, unsupported{name}
	}
	admin, err := a.admin()
	if err != nil {
		return nil, err
	}
	defer admin.Close()
	topic := str(args["topic"])
	switch name {
	case "create_topics":
		for _, t := range args["topics"].([]interface{}) {
			spec := t.(map[string]interface{})
			entries := map[string]*string{}
			for k, v := range opts(spec["config"]) {
				value := v.(string)
				entries[k] = &value
			}
			replicas := int16(1)
			if r, ok := spec["replicas"].(float64); ok {
				replicas = int16(r)
			}
			detail := &sarama.TopicDetail{NumPartitions: int32(num(spec["partitions"])), ReplicationFactor: replicas, ConfigEntries: entries}
			if err := admin.CreateTopic(str(spec["name"]), detail, false); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case "delete_topics":
		for _, t := range args["topics"].([]interface{}) {
			if err := admin.DeleteTopic(t.(string)); err != nil {
				return nil, err
			}
		}
		return nil, nil
	case "describe_configs":
		keys := []string{}
		for _, k := range args["keys"].([]interface{}) {
			keys = append(keys, k.(string))
		}
		entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic, ConfigNames: keys})
		out := map[string]string{}
		for _, e := range entries {
			out[e.Name] = e.Value
		}
		return out, err
	case "alter_configs":
		entries := map[string]*string{}
		for k, v := range opts(args["config"]) {
			value := v.(string)
			entries[k] = &value
		}
		return nil, admin.AlterConfig(sarama.TopicResource, topic, entries, false)
	case "create_partitions":
		return nil, admin.CreatePartitions(topic, int32(num(args["count"])), nil, false)
	case "list_groups":
		groups, err := admin.ListConsumerGroups()
		out := []string{}
		for g := range groups {
			out = append(out, g)
		}
		return out, err
	case "describe_group":
		described, err := admin.DescribeConsumerGroups([]string{str(args["group"])})
		if err != nil || len(described) == 0 {
			return nil, err
		}
		return map[string]interface{}{"state": described[0].State, "members": len(described[0].Members)}, nil
	default: // group_offsets
		client, err := sarama.NewClient(a.bootstrap, config(nil))
		if err != nil {
			return nil, err
		}
		defer client.Close()
		partitions, err := client.Partitions(topic)
		if err != nil {
			return nil, err
		}
		response, err := admin.ListConsumerGroupOffsets(str(args["group"]), map[string][]int32{topic: partitions})
		if err != nil {
			return nil, err
		}
		out := [][]interface{}{}
		for _, p := range partitions {
			if block := response.GetBlock(topic, p); block != nil && block.Offset >= 0 {
				out = append(out, []interface{}{topic, p, block.Offset})
			}
		}
		return out, nil
	}
}

func main() {
	a := &agent{bootstrap: strings.Split(os.Args[1], ",")}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<20), 64<<20)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var request struct {
			ID   int                    `json:"id"`
			Op   string                 `json:"op"`
			Args map[string]interface{} `json:"args"`
		}
		json.Unmarshal(in.Bytes(), &request)
		result, err := a.op(request.Op, request.Args)
		response := map[string]interface{}{"id": request.ID}
		if _, ok := err.(unsupported); ok {
			response["error"], response["kind"] = err.Error(), "unsupported"
		} else if err != nil {
			response["error"], response["kind"] = fmt.Sprintf("%T: %v", err, err), "error"
		} else {
			response["ok"] = result
		}
		out.Encode(response)
	}
}
