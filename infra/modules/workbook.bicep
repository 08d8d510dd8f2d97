// An Azure Monitor workbook over the app's own telemetry (README "Operating"): what the fleet
// does (operations by status, 429s, budget in use, queue age, failures by error code) and,
// for a job id typed in, its steps in order and where its time went. The same KQL as the README.
param appInsightsName string
param location string
param tags object

var appInsightsId = resourceId('Microsoft.Insights/components', appInsightsName)
var chartItem = {
  version: 'KqlItem/1.0'
  size: 0
  queryType: 0
  resourceType: 'microsoft.insights/components'
  visualization: 'timechart'
}
var tableItem = {
  version: 'KqlItem/1.0'
  size: 0
  queryType: 0
  resourceType: 'microsoft.insights/components'
  visualization: 'table'
}
var jobSelected = {
  parameterName: 'JobId'
  comparison: 'isNotEqualTo'
  value: ''
}
var content = {
  version: 'Notebook/1.0'
  fallbackResourceIds: [appInsightsId]
  items: [
    {
      type: 1
      name: 'about'
      content: {
        json: '## Graph provisioning\nWhat the app does, from its OpenTelemetry spans and metrics. Type a job id to see its steps in order and where its time went.'
      }
    }
    {
      type: 9
      name: 'parameters'
      content: {
        version: 'KqlParameterItem/1.0'
        style: 'pills'
        queryType: 0
        resourceType: 'microsoft.insights/components'
        parameters: [
          {
            id: 'b3f0c6c1-5a41-4c53-9a5e-2f8f6a4f1c01'
            version: 'KqlParameterItem/1.0'
            name: 'TimeRange'
            type: 4
            isRequired: true
            value: { durationMs: 86400000 }
            typeSettings: { selectableValues: [{ durationMs: 3600000 }, { durationMs: 86400000 }, { durationMs: 604800000 }] }
          }
          {
            id: 'b3f0c6c1-5a41-4c53-9a5e-2f8f6a4f1c02'
            version: 'KqlParameterItem/1.0'
            name: 'JobId'
            label: 'Job id'
            type: 1
            isRequired: false
            value: ''
          }
        ]
      }
    }
    {
      type: 3
      name: 'operations'
      content: union(chartItem, {
        title: 'Operations by status'
        query: 'customMetrics\n| where timestamp {TimeRange} and name == "provisioning.operations"\n| summarize operations = sum(valueSum) by status = tostring(customDimensions.status), bin(timestamp, {TimeRange:grain})'
      })
    }
    {
      type: 3
      name: 'throttling'
      content: union(chartItem, {
        title: '$batch calls and items Graph answered 429'
        query: 'customMetrics\n| where timestamp {TimeRange} and name in ("graph.throttled", "graph.batch.calls")\n| summarize total = sum(valueSum) by name, bin(timestamp, {TimeRange:grain})'
      })
    }
    {
      type: 3
      name: 'budget'
      content: union(chartItem, {
        title: 'Graph budget in use (1: sends wait for the budget)'
        query: 'customMetrics\n| where timestamp {TimeRange} and name == "pacing.budget.in_use"\n| summarize inUse = max(value) by lane = tostring(customDimensions.lane), bin(timestamp, {TimeRange:grain})'
      })
    }
    {
      type: 3
      name: 'queueAge'
      content: union(chartItem, {
        title: 'Queue age (seconds from due to intake)'
        query: 'customMetrics\n| where timestamp {TimeRange} and name == "queue.age"\n| summarize averageSeconds = sum(valueSum) / sum(valueCount), longestSeconds = max(valueMax) by queue = tostring(customDimensions.queue), bin(timestamp, {TimeRange:grain})'
      })
    }
    {
      type: 3
      name: 'failures'
      content: union(tableItem, {
        title: 'Operations failed or rejected, by error code'
        query: 'customMetrics\n| where timestamp {TimeRange} and name == "provisioning.operations"\n| where tostring(customDimensions.status) in ("Failed", "Rejected")\n| summarize operations = sum(valueSum) by status = tostring(customDimensions.status), errorCode = tostring(customDimensions.errorCode)\n| order by operations desc'
      })
    }
    {
      type: 3
      name: 'jobSteps'
      conditionalVisibility: jobSelected
      content: union(tableItem, {
        title: 'Steps of the job, in order'
        query: 'union requests, dependencies\n| where timestamp {TimeRange} and tostring(customDimensions.jobId) == "{JobId}"\n| project timestamp, name, durationMs = duration, success, operation_Id, operations = toint(customDimensions.operationCount), paceWaitMs = todouble(customDimensions.waitMs), throttled = toint(customDimensions.status429), retryAfter = todouble(customDimensions.retryAfterSeconds), requeueDelay = todouble(customDimensions.delaySeconds), queueAge = todouble(customDimensions.queueAgeSeconds), graphRequestId = tostring(customDimensions.graphRequestId)\n| order by timestamp asc'
      })
    }
    {
      type: 3
      name: 'jobTime'
      conditionalVisibility: jobSelected
      content: union(tableItem, {
        title: 'Where the time of the job went'
        query: 'union requests, dependencies\n| where timestamp {TimeRange} and tostring(customDimensions.jobId) == "{JobId}"\n| extend d = customDimensions\n| summarize started = min(timestamp), finished = max(timestamp + duration * 1ms), deliveries = countif(name == "job.intake"), queuedSeconds = sumif(todouble(d.queueAgeSeconds), name == "job.intake"), calls = countif(name endswith "$batch"), paceWaitSeconds = sumif(duration, name == "pace.wait") / 1000, graphSeconds = sumif(duration, name endswith "$batch") / 1000, recordSeconds = sumif(duration, name == "job.record") / 1000, throttledItems = sumif(toint(d.status429), name endswith "$batch"), requeueDelaySeconds = sumif(todouble(d.delaySeconds), name == "job.requeue")\n| extend elapsedSeconds = (finished - started) / 1s'
      })
    }
  ]
}

resource operationsWorkbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(appInsightsId, 'graph-provisioning-operations')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Graph provisioning: operations'
    category: 'workbook'
    sourceId: appInsightsId
    serializedData: string(content)
  }
}

output name string = operationsWorkbook.name
