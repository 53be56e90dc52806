package main

import (
	"io"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/statusbroadcaster/statusbroadcaster/adapters/pubsub"
)

// composeFile is the part of docker-compose.yml the tests check.
type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       string            `yaml:"build"`
		Command     []string          `yaml:"command"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		DependsOn   map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
		Healthcheck *struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
	} `yaml:"services"`
}

// No Docker engine runs the compose file here, so this checks its wiring:
// one KRaft broker, a topic creator the gateways wait for, PostgreSQL, two
// statusd gateways in kafka mode whose environment statusd itself accepts,
// the first durable on the database.
func TestDockerComposeWiring(t *testing.T) {
	data, err := os.ReadFile("../../docker-compose.yml")
	require.NoError(t, err)
	var c composeFile
	require.NoError(t, yaml.Unmarshal(data, &c))

	var names []string
	for name := range c.Services {
		names = append(names, name)
	}
	assert.ElementsMatch(t, []string{"kafka", "create-topic", "postgres", "statusd-1", "statusd-2"}, names, "no ZooKeeper, nothing else")

	kafka := c.Services["kafka"]
	assert.Regexp(t, `^apache/kafka:\d+\.\d+\.\d+$`, kafka.Image, "the official Apache Kafka image, pinned")
	assert.Equal(t, "broker,controller", kafka.Environment["KAFKA_PROCESS_ROLES"], "KRaft, single node")
	for k := range kafka.Environment {
		assert.NotContains(t, k, "ZOOKEEPER")
	}
	assert.Equal(t, "false", kafka.Environment["KAFKA_AUTO_CREATE_TOPICS_ENABLE"])
	require.NotNil(t, kafka.Healthcheck, "the topic creator waits for a healthy broker")
	advertised := map[string]bool{}
	for l := range strings.SplitSeq(kafka.Environment["KAFKA_ADVERTISED_LISTENERS"], ",") {
		if _, hostPort, ok := strings.Cut(l, "://"); ok {
			advertised[hostPort] = true
		}
	}

	creator := c.Services["create-topic"]
	assert.Equal(t, kafka.Image, creator.Image)
	assert.Equal(t, "service_healthy", creator.DependsOn["kafka"].Condition)
	arg := func(name string) string {
		i := slices.Index(creator.Command, name)
		require.GreaterOrEqual(t, i, 0, "create-topic runs with %s", name)
		require.Less(t, i+1, len(creator.Command))
		return creator.Command[i+1]
	}
	assert.True(t, strings.HasSuffix(creator.Command[0], "kafka-topics.sh"))
	assert.Contains(t, creator.Command, "--create")
	assert.Contains(t, creator.Command, "--if-not-exists", "running it twice is harmless")
	assert.Equal(t, pubsub.DefaultTopic, arg("--topic"))
	partitions, err := strconv.Atoi(arg("--partitions"))
	require.NoError(t, err)
	assert.Greater(t, partitions, 1, "several partitions")
	assert.Equal(t, "cleanup.policy=compact", arg("--config"))
	assert.True(t, advertised[arg("--bootstrap-server")], "create-topic reaches an advertised listener")

	hostPorts := map[string]bool{}
	clientIDs := map[string]bool{}
	for _, name := range []string{"statusd-1", "statusd-2"} {
		s := c.Services[name]
		assert.Equal(t, ".", s.Build, "%s: built from the Dockerfile", name)
		assert.Equal(t, "service_completed_successfully", s.DependsOn["create-topic"].Condition, "%s starts once the topic exists", name)
		cfg, err := parseConfig(nil, env(s.Environment), io.Discard)
		require.NoError(t, err, "%s: statusd accepts its environment", name)
		assert.Equal(t, "kafka", cfg.pubsub)
		kc, err := cfg.kafka.config()
		require.NoError(t, err)
		for _, b := range kc.Brokers {
			assert.True(t, advertised[b], "%s: broker %s is an advertised listener of kafka", name, b)
		}
		assert.Equal(t, pubsub.DefaultTopic, kc.Topic)
		assert.Empty(t, kc.ConsumerGroup, "%s: a gateway sees every event", name)
		assert.False(t, clientIDs[kc.ClientID], "%s: client ids differ", name)
		clientIDs[kc.ClientID] = true
		require.Len(t, s.Ports, 1)
		host, container, ok := strings.Cut(s.Ports[0], ":")
		require.True(t, ok)
		assert.Equal(t, strings.TrimPrefix(cfg.addr, ":"), container, "%s: the port statusd listens on is published", name)
		assert.False(t, hostPorts[host], "%s: host ports differ", name)
		hostPorts[host] = true
	}

	pg := c.Services["postgres"]
	assert.Regexp(t, `^postgres:\d+\.\d+$`, pg.Image, "the official PostgreSQL image, pinned")
	require.NotNil(t, pg.Healthcheck, "statusd-1 waits for a healthy database")
	durable := c.Services["statusd-1"]
	assert.Equal(t, "service_healthy", durable.DependsOn["postgres"].Condition)
	cfg, err := parseConfig(nil, env(durable.Environment), io.Discard)
	require.NoError(t, err)
	require.NotEmpty(t, cfg.database.url, "statusd-1 runs with --database-url")
	dbURL, err := url.Parse(cfg.database.url)
	require.NoError(t, err)
	assert.Equal(t, "postgres:5432", dbURL.Host, "statusd-1 reaches the postgres service")
	assert.Equal(t, "/"+pg.Environment["POSTGRES_DB"], dbURL.Path)
	assert.Equal(t, pg.Environment["POSTGRES_USER"], dbURL.User.Username())
	password, _ := dbURL.User.Password()
	assert.Equal(t, pg.Environment["POSTGRES_PASSWORD"], password)
	assert.True(t, cfg.demo, "the demo runs on the database")
	cfg, err = parseConfig(nil, env(c.Services["statusd-2"].Environment), io.Discard)
	require.NoError(t, err)
	assert.Empty(t, cfg.database.url, "statusd-2 is a gateway only")
}

func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("../../Dockerfile")
	require.NoError(t, err)
	text := string(data)
	from := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(text, -1)
	require.GreaterOrEqual(t, len(from), 2, "multi-stage")
	assert.Regexp(t, `^golang:1\.26`, from[0][1], "built with the module's Go version")
	assert.Equal(t, "gcr.io/distroless/static-debian12:nonroot", from[len(from)-1][1], "small final image")
	assert.Regexp(t, `CGO_ENABLED=0 go build .* \./cmd/statusd`, text, "a static binary, for a static image")
	final := text[strings.LastIndex(text, "\nFROM"):]
	assert.Regexp(t, `(?m)^USER nonroot`, final, "runs as a non-root user")
	assert.Regexp(t, `(?m)^ENTRYPOINT \["/statusd"\]`, final)
}
