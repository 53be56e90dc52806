package fanout

import (
	"slices"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/statusbroadcaster/statusbroadcaster/domain"
)

func TestTopicSetAcrossItsSliceLimit(t *testing.T) {
	var ts topicSet
	var want []domain.Topic
	for i := range 3 * fewTopics {
		topic := domain.ProjectTopic("p" + strconv.Itoa(i))
		assert.True(t, ts.add(topic))
		assert.False(t, ts.add(topic), "a topic is added once")
		want = append(want, topic)
		if i < fewTopics {
			assert.Nil(t, ts.many, "a few topics take no map")
		}
	}
	assert.NotNil(t, ts.many)
	assert.Equal(t, len(want), ts.len())
	assert.ElementsMatch(t, want, slices.Collect(ts.all()))

	for _, topic := range want[:2*fewTopics] {
		assert.True(t, ts.remove(topic))
		assert.False(t, ts.remove(topic))
		assert.False(t, ts.has(topic))
	}
	assert.Equal(t, fewTopics, ts.len())
	assert.ElementsMatch(t, want[2*fewTopics:], slices.Collect(ts.all()))
	for _, topic := range want[2*fewTopics:] {
		assert.True(t, ts.has(topic))
	}

	var one topicSet
	one.add(domain.AllProjects)
	assert.True(t, one.has(domain.AllProjects))
	assert.False(t, one.has(domain.ProjectTopic("x")))
	assert.True(t, one.remove(domain.AllProjects))
	assert.Zero(t, one.len())
}
